"""Conventions of the command line: --version, --help everywhere, completion and man pages
generated from the parser (and equal to the shipped files), README and help that cannot drift."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from tboot_py import __version__, _docs

CMDS = _docs.commands()
IDS = [c.name for c in CMDS]


def test_version() -> None:
    r = run_cli("--version")
    assert r.rc == 0 and r.out == f"tboot-py {__version__}\n"


@pytest.mark.parametrize("cmd", CMDS, ids=IDS)
def test_help_works_on_every_command(cmd: _docs.Command) -> None:
    r = run_cli(*cmd.path, "--help")
    assert r.rc == 0 and r.err == ""
    assert r.out.startswith(f"usage: {cmd.name}")


@pytest.mark.parametrize("cmd", [c for c in CMDS if c.subcommands()], ids=[c.name for c in CMDS if c.subcommands()])
def test_every_subcommand_is_in_its_parents_help(cmd: _docs.Command) -> None:
    out = run_cli(*cmd.path, "--help").out
    for name, help_ in cmd.subcommands():
        assert help_, f"{cmd.name} {name} has no help line"
        assert re.search(rf"^    {re.escape(name)}\s", out, re.M), f"{name} missing from `{cmd.name} --help`"


def test_hook_help_is_not_taken_for_a_file() -> None:
    for hook in ("xl-create", "libvirt-qemu"):
        r = run_cli("hook", hook, "--help")
        assert r.rc == 0 and "gate.toml" in r.out and "No such file" not in r.err


def test_shipped_man_pages_and_completion_are_what_the_parser_generates() -> None:
    share = REPO / "tboot_py" / "share"
    want = _docs.generated()
    have = {str(p.relative_to(share)) for p in [*share.glob("man/man1/*"), *share.glob("completions/*")]}
    assert have == set(want), "run `make docs`"
    for rel, text in want.items():
        assert (share / rel).read_text() == text, f"{rel} is stale: run `make docs`"
    assert len([c for c in CMDS if c.path]) + 1 == len([r for r in want if r.startswith("man/")])


def test_man_pages_render_without_warnings() -> None:
    for page in sorted((REPO / "tboot_py" / "share" / "man" / "man1").glob("*.1")):
        r = subprocess.run(["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True, check=False)
        assert r.returncode == 0 and r.stderr == "", (page.name, r.stderr)


def _bash_complete(line: str) -> list[str]:
    script = REPO / "tboot_py" / "share" / "completions" / "tboot-py"
    words = line.split(" ")
    prog = (f"source {script}; COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
            "_tboot_py; printf '%s\\n' \"${COMPREPLY[@]}\"")
    r = subprocess.run(["bash", "--norc", "-c", prog], capture_output=True, text=True, check=True, cwd="/")
    return [w for w in r.stdout.splitlines() if w]


def test_bash_completion() -> None:
    assert _bash_complete("tboot-py lo") == ["log"]
    assert set(_bash_complete("tboot-py log ")) == {"show", "replay", "verify", "diff", "check", "state"}
    assert _bash_complete("tboot-py measure --kind ") == ["auto", "file", "pe", "tboot-module"]
    assert "--exact" in _bash_complete("tboot-py verify --")
    assert set(_bash_complete("tboot-py hook ")) == {"xl-create", "libvirt-qemu"}
    assert "etc" in _bash_complete("tboot-py log replay e")  # files once the command is known
    assert _bash_complete("tboot-py --ver") == ["--version"]


def _zsh_complete(line: str) -> list[str]:
    """Runs the generated function with zsh's completion builtins replaced by stubs that print."""
    script = REPO / "tboot_py" / "share" / "completions" / "_tboot-py"
    words = line.split(" ")
    prog = ("_describe() { local -a a; a=(${(P)${@[-1]}}); for x in $a; do print -r -- ${x%%:*}; done }; "
            "compadd() { shift; print -rl -- $@ }; _files() { print -- FILES }; "
            f"words=({' '.join(repr(w) for w in words)}); CURRENT={len(words)}; "
            f"source {script}")
    r = subprocess.run(["zsh", "-f", "-c", prog], capture_output=True, text=True, check=True)
    return [w.replace("\\:", ":") for w in r.stdout.splitlines() if w]


def test_zsh_completion() -> None:
    assert shutil.which("zsh"), "zsh is in the Makefile's APT_PACKAGES"
    assert {"show", "replay", "check", "state"} <= set(_zsh_complete("tboot-py log "))
    assert _zsh_complete("tboot-py measure --kind ") == ["auto", "file", "pe", "tboot-module"]
    assert "--exact" in _zsh_complete("tboot-py verify --")
    assert _zsh_complete("tboot-py log replay x") == ["FILES"]


def test_completion_command_prints_the_shipped_scripts() -> None:
    share = REPO / "tboot_py" / "share" / "completions"
    assert run_cli("completion", "bash").out == (share / "tboot-py").read_text()
    assert run_cli("completion", "zsh").out == (share / "_tboot-py").read_text()


# --- the README cannot drift ---------------------------------------------------------------

_SPAN = re.compile(r"`([^`\n]+)`")
_OPT = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def _readme_invocations() -> list[str]:
    """Every ``tboot-py ...`` the README shows, from code blocks (continuations joined) and
    inline code; `log show ...` style spans in the event-log section count as `tboot-py log ...`."""
    text = (REPO / "README.md").read_text()
    out: list[str] = []
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    for b in blocks:
        for line in b.replace("\\\n", " ").splitlines():
            i = line.find("tboot-py ")
            if i >= 0:
                out.append(line[i:].split("#")[0])
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    top = {n for n, _ in CMDS[0].subcommands()}
    for span in _SPAN.findall(prose):
        if span.startswith("tboot-py ") and not span.split(" ")[1].endswith(":"):  # not a printed message
            out.append(span)
        elif span.split(" ")[0] in top and len(span.split(" ")) > 1:
            out.append("tboot-py " + span)
    # `log show|replay ...` names two commands.
    expanded = []
    for inv in out:
        words = inv.split(" ")
        if len(words) > 2 and "|" in words[2] and not words[2].startswith("-"):
            expanded += [" ".join([*words[:2], alt, *words[3:]]) for alt in words[2].split("|")]
        else:
            expanded.append(inv)
    return expanded


def _resolve(words: list[str]) -> tuple[_docs.Command, list[str]]:
    by_path = {c.path: c for c in CMDS}
    path: tuple[str, ...] = ()
    while words and (*path, words[0]) in by_path:
        path = (*path, words.pop(0))
    return by_path[path], words


def test_every_command_and_option_the_readme_names_exists() -> None:
    seen = _readme_invocations()
    assert len(seen) > 30
    for inv in seen:
        cmd, rest = _resolve(inv.split()[1:])
        if cmd.path == () and rest and not rest[0].startswith("-"):
            if rest[0] in {"--"}:
                continue
            pytest.fail(f"README names `tboot-py {rest[0]}`, which is not a command: {inv!r}")
        if cmd.subcommands() and rest and not rest[0].startswith("-"):
            pytest.fail(f"README names `{cmd.name} {rest[0]}`, which is not a command: {inv!r}")
        known = {o for a in cmd.options() for o in a.option_strings}
        tail = " ".join(rest).split(" -- ")[0]  # after --, the launcher's own arguments
        for opt in _OPT.findall(tail):
            assert opt in known, f"README: `{cmd.name}` has no option {opt} ({inv!r})"



# --- start fast: a command imports only its own stage ---------------------------------------

def test_command_index_matches_what_the_modules_register() -> None:
    from tboot_py._cli import COMMANDS

    registered = {n: h for n, h in CMDS[0].subcommands()}
    assert {n: h for n, _, h in COMMANDS} == registered


def _loaded(argv: list[str], want_rc: int | None = None) -> set[str]:
    """The modules ``main(argv)`` adds to a fresh interpreter (and its exit code, if given).
    What the interpreter held before tboot-py was imported (site hooks, such as an editable
    install's finder) is not the command's doing and is left out."""
    prog = ("import contextlib, io, sys\nstart = set(sys.modules)\nfrom tboot_py._cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            f"    rc = main({argv!r})\n"
            "print(rc, *sorted(set(sys.modules) - start))")
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True, cwd=REPO)
    rc, *mods = r.stdout.split()
    if want_rc is not None:
        assert int(rc) == want_rc, (argv, rc)
    return set(mods)


HEAVY = {"rich", "tpm2_pytss", "cryptography", "pefile", "jinja2", "fastapi", "sqlalchemy", "httpx"}
#: Start-up cost no command pays for (issue 14): shutil (argparse asks it for the terminal width;
#: it loads bz2, lzma and fnmatch), package metadata, and cryptography's serialization package
#: (SSH and cipher modules) unless a PEM key is read.
NEVER = {"shutil", "bz2", "lzma", "importlib.metadata", "email", "tempfile", "asyncio"}
PEM = "cryptography.hazmat.primitives.serialization"


def test_help_imports_no_stage() -> None:
    mods = _loaded(["--help"], 0)
    assert {m for m in mods if m.startswith("tboot_py")} <= {"tboot_py", "tboot_py._cli", "tboot_py.errors"}
    assert not mods & (HEAVY | NEVER)
    mods = _loaded(["--version"], 0)
    assert {m for m in mods if m.startswith("tboot_py")} <= {"tboot_py", "tboot_py._cli", "tboot_py.errors"}
    assert not mods & (HEAVY | NEVER)


def test_commands_import_only_what_they_use(tmp_path: Path) -> None:
    """Each command, run to success on real inputs, loads no more than it needs."""
    import base64

    from _softak import SoftAK, evidence, make_attest, pcr_values

    from tboot_py import algorithms
    from tboot_py.eventlog import NewEvent, encode_log
    from tboot_py.tpm import wire as st

    log = tmp_path / "log.bin"
    log.write_bytes(encode_log([NewEvent(9, 0x0D, {"sha256": bytes(32)}, b"x")], [algorithms.SHA256]))
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    ak, nonce, sel = SoftAK.rsa(), b"n" * 16, st.PCRSelection.parse_spec("sha256:0-7")
    pcrs = pcr_values(sel)
    ev = evidence(ak, make_attest(ak, sel, pcrs, nonce), pcrs)
    (tmp_path / "ev.json").write_text(ev.dumps())
    (tmp_path / "ak.json").write_text(json.dumps({"public": base64.b64encode(ak.public.raw).decode()}))
    (tmp_path / "ak.pub").write_bytes(ak.public.raw)
    (tmp_path / "quote.msg").write_bytes(ev.untrusted_attest)
    (tmp_path / "quote.sig").write_bytes(ev.untrusted_signature)
    (tmp_path / "pcrs.json").write_text(json.dumps({"sha256": {str(i): v.hex() for i, v in pcrs["sha256"].items()}}))
    quote = ["quote", "verify", "--ak", str(tmp_path / "ak.pub"), "-m", str(tmp_path / "quote.msg"),
             "-s", str(tmp_path / "quote.sig"), "-f", str(tmp_path / "pcrs.json"), "-q", nonce.hex()]
    # No command here needs pathlib (files are read through os), nor does a TCG log need the IMA
    # parser.
    tcg_only = {"pathlib", "tboot_py.eventlog.ima"}
    for argv, allowed in ((["log", "replay", "--json", str(log)], set()),
                          (["log", "replay", str(log)], set()),
                          (["measure", str(f)], set()),
                          (["measure", "--json", str(f)], {"json"}),
                          (quote, {"cryptography"}),
                          (["verify", str(tmp_path / "ev.json"), "--ak", str(tmp_path / "ak.json"), "--nonce",
                            nonce.hex()], {"cryptography"})):
        mods = _loaded(argv, 0)
        unwanted = HEAVY | NEVER | tcg_only | ({"json"} if argv[0] == "measure" else set())
        assert not (mods & unwanted) - allowed, (argv, (mods & unwanted) - allowed)
        assert PEM not in mods, argv
        assert not any(m.startswith(("tboot_py.server", "tboot_py.launch", "tboot_py.policy")) for m in mods), argv


# Commands whose output is something else (a report, a script, a server, another program's).
NO_JSON = {("hook", "xl-create"), ("hook", "libvirt-qemu"), ("audit", "report"), ("serve",), ("completion",)}


def test_json_everywhere() -> None:
    leaves = [c for c in CMDS if c.path and not c.subcommands() and c.path not in NO_JSON]
    missing = [c.name for c in leaves if "--json" not in {o for a in c.options() for o in a.option_strings}]
    assert not missing, f"no --json: {missing}"


def test_policy_writers_report_in_json(tmp_path: Path) -> None:
    pol, key = tmp_path / "p.toml", tmp_path / "k"
    doc = json.loads(run_cli("policy", "init", str(pol), "--json").out)
    assert doc == {"wrote": str(pol), "mode": "halt"}
    f = tmp_path / "vmlinuz"
    f.write_bytes(b"abc")
    doc = json.loads(run_cli("policy", "add", str(pol), "--component", "kernel", "--file", str(f), "--json").out)
    assert doc["digests"]["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    doc = json.loads(run_cli("policy", "keygen", "-o", str(key), "--json").out)
    assert doc["wrote"] == [str(key), str(key) + ".pub"] and len(doc["keyid"]) == 64
    doc = json.loads(run_cli("policy", "sign", str(pol), "--key", str(key), "-o", str(tmp_path / "s.json"),
                             "--json").out)
    assert doc == {"wrote": str(tmp_path / "s.json"), "signed_by": [json.loads(
        (tmp_path / "s.json").read_text())["signatures"][0]["keyid"]]}


def _stdin(argv: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "tboot_py", *argv], input=data, capture_output=True, check=False,
                          cwd=REPO, timeout=120)


def test_dash_reads_standard_input(tmp_path: Path) -> None:
    from tboot_py import algorithms
    from tboot_py.eventlog import NewEvent, encode_log

    log = encode_log([NewEvent(9, 0x0D, {"sha256": hashlib.sha256(b"x").digest()}, b"x")], [algorithms.SHA256])
    (tmp_path / "log.bin").write_bytes(log)
    want = run_cli("log", "replay", str(tmp_path / "log.bin")).out.encode()
    assert _stdin(["log", "replay", "-"], log).stdout == want
    r = _stdin(["measure", "--banks", "sha256", "-"], b"abc")
    assert r.stdout == b"sha256 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad file 3 -\n"
    pol = tmp_path / "p.toml"
    run_cli("policy", "init", str(pol))
    assert _stdin(["policy", "show", "--json", "-"], pol.read_bytes()).returncode == 0
    r = _stdin(["policy", "from-log", "--json", "-"], log)
    assert r.returncode == 0 and json.loads(r.stdout)["version"] == 1
    r = _stdin(["log", "replay", "-"], b"")
    assert r.returncode == 2 and b"Traceback" not in r.stderr


def test_dash_reads_the_ak_the_audit_log_and_a_vlp_from_standard_input(tmp_path: Path) -> None:
    from tboot_py.audit.records import append_record
    from tboot_py.tpm.wire import PCRSelection
    from tests._softak import SoftAK, evidence, make_attest, nonce, pcr_values

    ak, sel, n = SoftAK.rsa(), PCRSelection.parse_spec("sha256:0-3"), nonce()
    pcrs = pcr_values(sel)
    ev = evidence(ak, make_attest(ak, sel, pcrs, n), pcrs)
    (tmp_path / "ev.json").write_text(ev.dumps())
    r = _stdin(["verify", str(tmp_path / "ev.json"), "--ak", "-", "--nonce", n.hex(), "--json"], ak.public.raw)
    assert r.returncode == 0 and json.loads(r.stdout)["verified"] is True, r.stderr
    (tmp_path / "msg").write_bytes(ev.untrusted_attest)
    (tmp_path / "sig").write_bytes(ev.untrusted_signature)
    (tmp_path / "pcrs.json").write_text(json.dumps({"sha256": {str(i): v.hex() for i, v in pcrs["sha256"].items()}}))
    r = _stdin(["quote", "verify", "--ak", "-", "-m", str(tmp_path / "msg"), "-s", str(tmp_path / "sig"),
                "-f", str(tmp_path / "pcrs.json"), "-q", n.hex(), "--json"], ak.public.raw)
    assert r.returncode == 0 and json.loads(r.stdout)["verified"] is True, r.stderr

    audit = tmp_path / "audit.jsonl"
    append_record(audit, {"decision": "allow"})
    append_record(audit, {"decision": "deny"})
    r = _stdin(["audit", "verify", "--json", "-"], audit.read_bytes())
    assert r.returncode == 0 and json.loads(r.stdout)["records"] == 2, r.stderr
    r = _stdin(["audit", "show", "--json", "-"], audit.read_bytes())
    assert [x["decision"] for x in json.loads(r.stdout)["records"]] == ["allow", "deny"]
    r = _stdin(["audit", "report", "--format", "json", "-"], audit.read_bytes())
    assert r.returncode == 0 and b"deny" in r.stdout, r.stderr
    assert _stdin(["audit", "verify", "-"], audit.read_bytes()[:-5]).returncode == 1  # a torn chain

    vlp_policy, vlp = tmp_path / "vlp.toml", tmp_path / "p.vlp"
    vlp_policy.write_text('version = 1\n[[rules]]\ntype = "tboot-vlp"\nbank = "sha256"\ncontrol = 0\n'
                          '[[rules.entries]]\nmod_num = 0\npcr = 18\nhash_type = "image"\n'
                          f'hashes = ["{"ab" * 32}"]\n')
    assert run_cli("policy", "export-vlp", str(vlp_policy), "-o", str(vlp)).rc == 0
    out = tmp_path / "imported.toml"
    r = _stdin(["policy", "import-vlp", "-", "-o", str(out), "--json"], vlp.read_bytes())
    assert r.returncode == 0 and json.loads(r.stdout)["entries"] == 1, r.stderr
    assert "ab" * 32 in out.read_text()


def test_standard_input_is_given_to_one_argument_at_most(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    for argv, names in ((["verify", "-", "--ak", "-", "--nonce", "00"], "EVIDENCE and --ak"),
                        (["quote", "verify", "--ak", str(f), "-m", "-", "-s", "-", "-f", str(f), "-q", "00"],
                         "--message and --signature"),
                        (["measure", "-", str(f), "-"], "FILE and FILE"),
                        (["log", "diff", "-", "-"], "A and B"),
                        (["policy", "show", "-", "--trust-key", "-"], "POLICY and --trust-key")):
        r = _stdin(argv, b"data")
        err = r.stderr.decode()
        assert r.returncode == 2 and r.stdout == b"", (argv, err)
        assert err == f"tboot-py: error: only one argument can be - (standard input), not {names}\n", argv
