#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris) of the event-log, artifact, policy, evidence and xl
config parsers, bounded in time.

    tests/fuzz/run_all.py --seconds 60            # every target, the time split between them
    tests/fuzz/run_all.py --target parse_log --seconds 30

Each target runs in its own process under libFuzzer. A target fails on any exception other
than ParseError (the only exception a parser may raise) and on any exception from the code
that consumes a parsed log (replay, decoders, boot state, digest checks). The PE/Authenticode
target and the gzip tboot-module target fail on anything but ParseError (and the gzip-bomb
InputError). The policy target (TOML, JSON and DSSE policies) fails on anything but
PolicyError, the evidence target on anything but ParseError, and the xl config target on
anything but InputError. Seeds come from the real logs in ../shared/corpus, the policies
in measurements/, and PE, gzip, evidence and xl config files built here; new inputs go to a
temporary directory, never to the corpus.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("TBOOT_PY_CORPUS") or REPO.parent / "shared" / "corpus") / "logs"
TARGETS = ("parse_log", "ima", "cel", "authenticode", "tboot_gzip", "policy", "evidence", "xl_config")


def _target(name: str) -> object:
    import atheris

    with atheris.instrument_imports():
        from tboot_py.errors import ParseError
        from tboot_py.eventlog import parse_log, replay
        from tboot_py.eventlog.cel import from_cel
        from tboot_py.eventlog.checks import check_digests
        from tboot_py.eventlog.decode import decode_event
        from tboot_py.eventlog.ima import parse_ima
        from tboot_py.eventlog.state import boot_state

    def consume(log: object) -> None:
        replay(log)  # type: ignore[arg-type]
        boot_state(log)  # type: ignore[arg-type]
        check_digests(log)  # type: ignore[arg-type]
        for e in log.events:  # type: ignore[attr-defined]
            decode_event(e)

    def fuzz_parse(data: bytes) -> None:
        try:
            log = parse_log(data)
        except ParseError:
            return
        consume(log)

    def fuzz_ima(data: bytes) -> None:
        try:
            parse_ima(data)
        except ParseError:
            return

    def fuzz_cel(data: bytes) -> None:
        try:
            log = from_cel(data)
        except ParseError:
            return
        consume(log)

    with atheris.instrument_imports():
        import pefile  # noqa: F401  (imported lazily by the PE adapter; instrumented here)

        from tboot_py.algorithms import SHA1, SHA256
        from tboot_py.measure.artifacts import ArtifactKind, detect_kind
        from tboot_py.measure.authenticode import authenticode_digests
        from tboot_py.measure.tboot import DecompressedTooLarge, tboot_module_digests

    def fuzz_authenticode(data: bytes) -> None:
        kind = detect_kind(data)
        try:
            digests, size = authenticode_digests(data, (SHA1, SHA256))
        except ParseError:
            return
        # A digest comes only from something that is a PE image, covering the whole file.
        assert kind is ArtifactKind.PE and size == len(data), (kind, size)
        assert len(digests["sha256"]) == 32

    def fuzz_gzip(data: bytes) -> None:
        for img in (data, b"\x1f\x8b" + data):
            try:
                digests, size, gz = tboot_module_digests(img, "console=com1", (SHA256,), max_decompressed=1 << 24)
            except (ParseError, DecompressedTooLarge):
                continue
            assert size == len(img) and gz == img.startswith(b"\x1f\x8b") and len(digests["sha256"]) == 32

    with atheris.instrument_imports():
        from tboot_py.errors import InputError, PolicyError
        from tboot_py.launch.xl import check_config
        from tboot_py.policy.io import loads_policy
        from tboot_py.tpm.evidence import parse_evidence

    def fuzz_policy(data: bytes) -> None:
        try:
            loads_policy(data)
        except PolicyError:
            return

    def fuzz_evidence(data: bytes) -> None:
        try:
            parse_evidence(data)
        except ParseError:
            return

    def fuzz_xl(data: bytes) -> None:
        try:
            check_config(data.decode("utf-8", "surrogateescape"))
        except InputError:
            return

    return {"parse_log": fuzz_parse, "ima": fuzz_ima, "cel": fuzz_cel, "authenticode": fuzz_authenticode,
            "tboot_gzip": fuzz_gzip, "policy": fuzz_policy, "evidence": fuzz_evidence, "xl_config": fuzz_xl}[name]


def _seeds(name: str, directory: Path) -> None:
    import json

    sys.path.insert(0, str(REPO))
    from tboot_py.eventlog import read_log
    from tboot_py.eventlog.cel import to_cel

    for p in sorted(CORPUS.glob("*.bin"))[:20]:
        if name == "parse_log":
            (directory / p.name).write_bytes(p.read_bytes())
        elif name == "cel":
            (directory / (p.stem + ".json")).write_text(json.dumps(to_cel(read_log(p)))[:20000])
    if name == "authenticode":
        sys.path.insert(0, str(REPO / "tests"))
        from _pe_synth import Sec, build_pe, win_certificate, with_cert_table

        pe = build_pe([Sec(b".text", b"\x90" * 0x300), Sec(b".data", b"D" * 0x80)], trailing=b"tail")
        (directory / "pe32plus").write_bytes(pe.data)
        (directory / "pe32").write_bytes(build_pe(pe32plus=False, n_rva=4).data)
        assert pe.certdir_off is not None
        (directory / "signed").write_bytes(with_cert_table(pe.data, pe.certdir_off, win_certificate()))
    if name == "tboot_gzip":
        import gzip

        (directory / "one").write_bytes(gzip.compress(b"multiboot module " * 64))
        (directory / "two").write_bytes(gzip.compress(b"a" * 100) + gzip.compress(b"b" * 3))
    if name == "policy":
        for p in sorted((REPO / "measurements").rglob("*")):
            if p.suffix in (".toml", ".json") and p.stat().st_size < 60000:
                (directory / p.name).write_bytes(p.read_bytes())
        (directory / "dup.json").write_text('{"version": 1, "version": 1, "rules": []}')
    if name == "evidence":
        import base64

        b64 = base64.b64encode(bytes(64)).decode()
        (directory / "evidence.json").write_text(json.dumps({
            "format": "tboot-py-evidence/1", "attest": b64, "signature": b64, "ak_public": None,
            "pcrs": {"sha256": {"0": "00" * 32}}, "event_logs": [{"name": "firmware", "log": b64}],
            "ek_certificate": None}))
    if name == "xl_config":
        (directory / "guest.cfg").write_text('name = "g"\nkernel = "/boot/vmlinuz"\nramdisk = "/boot/initrd"\n'
                                             'cmdline = "console=hvc0"\nmemory = 512\nvcpus = 2\n'
                                             'disk = [ "phy:/dev/vg/g,xvda,w" ]\n# comment\n')
        (directory / "extra.cfg").write_text('kernel = "/k"\nroot = "/dev/xvda1"\nextra = "quiet"\n')
    if name == "ima":
        h = "00" * 20
        (directory / "ascii").write_text(f"10 {h} ima-ng sha256:{'00' * 32} /init\n10 {h} ima {h} /bin/sh\n")


def run_one(name: str, seconds: int) -> int:
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        work = Path(tmp) / "corpus"
        seeds = Path(tmp) / "seeds"
        work.mkdir()
        seeds.mkdir()
        _seeds(name, seeds)
        cmd = [sys.executable, __file__, "--child", name, f"-max_total_time={seconds}", "-rss_limit_mb=1024",
               "-max_len=65536", f"-artifact_prefix={tmp}/", "-print_final_stats=1", str(work), str(seeds)]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        r = subprocess.run(cmd, env=env, check=False)
        if r.returncode != 0:
            for crash in Path(tmp).glob("crash-*"):
                dest = REPO / ".state" / "fuzz" / f"{name}-{crash.name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(crash.read_bytes())
                print(f"fuzz {name}: crashing input saved to {dest}", file=sys.stderr)
        return r.returncode


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        import atheris

        name = sys.argv[2]
        atheris.Setup([sys.argv[0], *sys.argv[3:]], _target(name))  # type: ignore[arg-type]
        atheris.Fuzz()
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=int, default=60, help="total time budget")
    ap.add_argument("--target", choices=TARGETS, action="append", help="run only this target (repeatable)")
    args = ap.parse_args()
    targets = args.target or list(TARGETS)
    per = max(5, args.seconds // len(targets))
    failed = [t for t in targets if run_one(t, per) != 0]
    if failed:
        print(f"fuzz: FAILED targets: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"fuzz: {', '.join(targets)} ran {per} s each without failures", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
