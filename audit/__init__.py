"""Tamper-evident decision log (see store.py) and its CLI."""
from .config import load_audit_key
from .record import build_decision_record, canonical_json, patient_key, scrub
from .replay import DatabaseReplayStore
from .store import AuditStore, Problem, VerifyReport

__all__ = ["AuditStore", "DatabaseReplayStore", "Problem", "VerifyReport", "build_decision_record", "canonical_json",
           "load_audit_key", "patient_key", "scrub"]

