"""TCG event logs: parse, replay, write.

Public API::

    parse_log(data, source=None) -> EventLog       # only ParseError escapes
    read_log(path) -> EventLog                      # + InputError for read failures
    replay(log, banks=None) -> {bank: {pcr: value}} # only PCRs the log extends
    NewEvent, encode_header, encode_event, append_events   # crypto-agile writer
    replay_against(log, expected, quirks=None) -> ReplayReport   # with the named quirk registry
    boot_state(log) -> BootState                    # Secure Boot, db/dbx, images, cmdlines
    check_digests(log), diff(a, b)                  # data-vs-digest checks, first divergence
    parse_ima(data) / replay_ima(ima_log)           # IMA measurement lists (PCR 10)
    to_cel(log) / from_cel(text)                    # TCG Canonical Event Log, JSON form

Everything parsed from a log is untrusted until a verified quote backs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tboot_py._lazy import exports

# Eager: this name is also a submodule, and importing the submodule would rebind it.
from tboot_py.eventlog.replay import replay

if TYPE_CHECKING:
    from tboot_py.eventlog.cel import from_cel, to_cel
    from tboot_py.eventlog.checks import DigestStatus, LogDiff, check_digests, diff
    from tboot_py.eventlog.ima import ImaEvent, ImaLog, parse_ima, replay_ima
    from tboot_py.eventlog.model import (
        EV_NO_ACTION,
        PCR_INDEX_NONE,
        Event,
        EventLog,
        LogFormat,
        SpecIdEvent,
        bank_name,
        event_type_name,
    )
    from tboot_py.eventlog.parse import DEFAULT_LOG_PATH, parse_log, read_log
    from tboot_py.eventlog.quirks import REGISTRY as QUIRKS
    from tboot_py.eventlog.quirks import PCRMatch, ReplayReport, load_pcr_values, replay_against
    from tboot_py.eventlog.replay import IncompleteLogError
    from tboot_py.eventlog.state import Authority, BootState, LoadedImage, SignatureDb, boot_state
    from tboot_py.eventlog.write import NewEvent, append_events, encode_event, encode_header, encode_log

__all__ = [
    "DEFAULT_LOG_PATH",
    "EV_NO_ACTION",
    "PCR_INDEX_NONE",
    "QUIRKS",
    "Authority",
    "BootState",
    "DigestStatus",
    "Event",
    "EventLog",
    "ImaEvent",
    "ImaLog",
    "IncompleteLogError",
    "LoadedImage",
    "LogDiff",
    "LogFormat",
    "NewEvent",
    "PCRMatch",
    "ReplayReport",
    "SignatureDb",
    "SpecIdEvent",
    "append_events",
    "bank_name",
    "boot_state",
    "check_digests",
    "diff",
    "encode_event",
    "encode_header",
    "encode_log",
    "event_type_name",
    "from_cel",
    "load_pcr_values",
    "parse_ima",
    "parse_log",
    "read_log",
    "replay",
    "replay_against",
    "replay_ima",
    "to_cel",
]

__getattr__, __dir__ = exports(__name__, {
    'from_cel': ('tboot_py.eventlog.cel', 'from_cel'),
    'to_cel': ('tboot_py.eventlog.cel', 'to_cel'),
    'DigestStatus': ('tboot_py.eventlog.checks', 'DigestStatus'),
    'LogDiff': ('tboot_py.eventlog.checks', 'LogDiff'),
    'check_digests': ('tboot_py.eventlog.checks', 'check_digests'),
    'diff': ('tboot_py.eventlog.checks', 'diff'),
    'ImaEvent': ('tboot_py.eventlog.ima', 'ImaEvent'),
    'ImaLog': ('tboot_py.eventlog.ima', 'ImaLog'),
    'parse_ima': ('tboot_py.eventlog.ima', 'parse_ima'),
    'replay_ima': ('tboot_py.eventlog.ima', 'replay_ima'),
    'EV_NO_ACTION': ('tboot_py.eventlog.model', 'EV_NO_ACTION'),
    'PCR_INDEX_NONE': ('tboot_py.eventlog.model', 'PCR_INDEX_NONE'),
    'Event': ('tboot_py.eventlog.model', 'Event'),
    'EventLog': ('tboot_py.eventlog.model', 'EventLog'),
    'LogFormat': ('tboot_py.eventlog.model', 'LogFormat'),
    'SpecIdEvent': ('tboot_py.eventlog.model', 'SpecIdEvent'),
    'bank_name': ('tboot_py.eventlog.model', 'bank_name'),
    'event_type_name': ('tboot_py.eventlog.model', 'event_type_name'),
    'DEFAULT_LOG_PATH': ('tboot_py.eventlog.parse', 'DEFAULT_LOG_PATH'),
    'parse_log': ('tboot_py.eventlog.parse', 'parse_log'),
    'read_log': ('tboot_py.eventlog.parse', 'read_log'),
    'QUIRKS': ('tboot_py.eventlog.quirks', 'REGISTRY'),
    'PCRMatch': ('tboot_py.eventlog.quirks', 'PCRMatch'),
    'ReplayReport': ('tboot_py.eventlog.quirks', 'ReplayReport'),
    'load_pcr_values': ('tboot_py.eventlog.quirks', 'load_pcr_values'),
    'replay_against': ('tboot_py.eventlog.quirks', 'replay_against'),
    'IncompleteLogError': ('tboot_py.eventlog.replay', 'IncompleteLogError'),
    'Authority': ('tboot_py.eventlog.state', 'Authority'),
    'BootState': ('tboot_py.eventlog.state', 'BootState'),
    'LoadedImage': ('tboot_py.eventlog.state', 'LoadedImage'),
    'SignatureDb': ('tboot_py.eventlog.state', 'SignatureDb'),
    'boot_state': ('tboot_py.eventlog.state', 'boot_state'),
    'NewEvent': ('tboot_py.eventlog.write', 'NewEvent'),
    'append_events': ('tboot_py.eventlog.write', 'append_events'),
    'encode_event': ('tboot_py.eventlog.write', 'encode_event'),
    'encode_header': ('tboot_py.eventlog.write', 'encode_header'),
    'encode_log': ('tboot_py.eventlog.write', 'encode_log'),
})
