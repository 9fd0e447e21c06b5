"""Launch hooks: Xen ``xl create``, libvirt's qemu hook, and a systemd unit whose ExecStart= is the gate.

All three call the same gate. Their settings (policy, trust keys, TPM, state) come from a
small TOML file, ``/etc/tboot-py/gate.toml`` or the file named by ``TBOOT_PY_GATE_CONFIG``::

    policy = "/etc/tboot-py/policy.signed.json"
    trust_keys = ["/etc/tboot-py/policy-key.pub"]
    tpm = "/dev/tpmrm0"
    state = "/var/lib/tboot-py"
    pcr_map = "default"          # or "tboot"

The shell and unit files next to this module are thin shims around ``tboot-py hook ...``.
"""
