"""TCG event logs: parse, replay, write.

Public API::

    parse_log(data, source=None) -> EventLog       # only ParseError escapes
    read_log(path) -> EventLog                      # + InputError for read failures
    replay(log, banks=None) -> {bank: {pcr: value}} # only PCRs the log extends
    NewEvent, encode_header, encode_event, append_events   # crypto-agile writer

Everything parsed from a log is untrusted until a verified quote backs it.
"""

from __future__ import annotations

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
from tboot_py.eventlog.replay import IncompleteLogError, replay
from tboot_py.eventlog.write import NewEvent, append_events, encode_event, encode_header, encode_log

__all__ = [
    "DEFAULT_LOG_PATH",
    "EV_NO_ACTION",
    "PCR_INDEX_NONE",
    "Event",
    "EventLog",
    "IncompleteLogError",
    "LogFormat",
    "NewEvent",
    "SpecIdEvent",
    "append_events",
    "bank_name",
    "encode_event",
    "encode_header",
    "encode_log",
    "event_type_name",
    "parse_log",
    "read_log",
    "replay",
]
