"""The predecessors an amended SR names (PredecessorDocumentsSequence, study > series > SOP), which become the
`relatesTo` `replaces` of its DocumentReference: every valid SOPInstanceUID, in order, once; nothing guessed."""

from __future__ import annotations

from typing import Any

from app.core import dicom_json as dj
from app.core.mapping.diagnostic_report import predecessor_uids


def _sq(*items: dict[str, Any]) -> dict[str, Any]:
    return {"vr": "SQ", "Value": list(items)}


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def _sop(uid: str) -> dict[str, Any]:
    return {dj.tag("ReferencedSOPInstanceUID"): _ui(uid)}


def _predecessors(*series: list[str]) -> dict[str, Any]:
    study = {
        dj.tag("StudyInstanceUID"): _ui("2.25.1"),
        dj.tag("ReferencedSeriesSequence"): _sq(
            *({dj.tag("ReferencedSOPSequence"): _sq(*(_sop(u) for u in sops))} for sops in series)
        ),
    }
    return {dj.tag("PredecessorDocumentsSequence"): _sq(study)}


def test_every_valid_predecessor_in_order_once() -> None:
    instance = _predecessors(["2.25.7", "2.25.3"], ["2.25.7", "2.25.9"])
    assert predecessor_uids(instance) == ("2.25.7", "2.25.3", "2.25.9")


def test_an_invalid_uid_is_not_named() -> None:
    assert predecessor_uids(_predecessors(["2.25.07", "not-a-uid", "2.25.5"])) == ("2.25.5",)


def test_no_sequence_or_an_empty_one_names_nothing() -> None:
    assert predecessor_uids({}) == ()
    assert predecessor_uids({dj.tag("PredecessorDocumentsSequence"): {"vr": "SQ"}}) == ()
    assert predecessor_uids(_predecessors([])) == ()
