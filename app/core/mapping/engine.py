"""The mapping engine: compiled table rows turn DICOM JSON into a FHIR R4 ImagingStudy dict.

Pure: no I/O, no Flask. The tables are compiled once (keywords -> tags, transform names ->
functions) so that mapping a study is a loop over prepared rows that builds plain dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.uid import UID

from app.core import dicom_json as dj
from app.core.mapping.context import MappingContext, Terminology, TrustMapping
from app.core.mapping.transforms import PREPARE, TRANSFORMS, Transform

# (element key, append?, transform, tags, args, probe): `probe` is a tag whose absence means the
# row has nothing to map, checked before the transform is called (most archives send few tags).
Row = tuple[str, bool, Transform, tuple[str, ...], dict[str, Any], str | None]
Fields = Callable[[dj.Dataset, MappingContext, dict[str, Any]], dict[str, Any]]
# Transforms whose first tag alone decides whether there is anything to map.
_FIRST_TAG_DECIDES = frozenset({"accession_identifier", "study_uid_identifier", "study_id_identifier"})


class MappingTableError(ValueError):
    """A mapping table names an unknown DICOM keyword or transform."""


def _tag(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise MappingTableError(f"{keyword!r} is not a DICOM keyword (PS3.6)")
    return f"{tag:08X}"


def compile_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[Row, ...]:
    """Resolve each row of a table section into (key, append, function, tags, args, probe)."""
    compiled = []
    for row in rows:
        name = row["transform"]
        if name not in TRANSFORMS:
            raise MappingTableError(f"{row['element']}: unknown transform {name!r}")
        args = {**row.get("args", {}), "element": row["element"]}
        if name in PREPARE:
            args = PREPARE[name](args)
        tags = tuple(_tag(k) for k in row.get("tags", ()))
        probe = tags[0] if len(tags) == 1 or (tags and name in _FIRST_TAG_DECIDES) else None
        compiled.append((row["element"].rsplit(".", 1)[1], bool(row.get("list")), TRANSFORMS[name], tags, args, probe))
    return tuple(compiled)


def _apply(rows: tuple[Row, ...], ds: dj.Dataset, ctx: MappingContext, out: dict[str, Any]) -> dict[str, Any]:
    for key, append, fn, tags, args, probe in rows:
        if probe is not None and probe not in ds:
            continue
        value = fn(ds, tags, args, ctx)
        if value is None:
            continue
        if append:
            out.setdefault(key, []).append(value)
        else:
            out[key] = value
    return out


def _order(number_tag: str, uid_tag: str) -> Callable[[dj.Dataset], tuple[int, str]]:
    """Sort key: the DICOM number (unnumbered last), then the UID, so the output is deterministic."""

    def key(ds: dj.Dataset) -> tuple[int, str]:
        item = ds.get(number_tag)
        values = item.get("Value") if item else None
        number = dj.unsigned(values[0]) if values else None
        uid_item = ds.get(uid_tag)
        uids = uid_item.get("Value") if uid_item else None
        return (number if number is not None else 1 << 31, str(uids[0]) if uids else "")

    return key


_series_order = _order(dj.SERIES_NUMBER, dj.SERIES_INSTANCE_UID)


def _in_order(series: Sequence[dj.Dataset]) -> Sequence[dj.Dataset]:
    """The series sorted by _series_order; as they are when their SeriesNumbers are ints that already
    rise (the sort would keep that order: the numbers alone decide it), without making the keys."""
    if len(series) < 2:
        return series
    previous = -1
    for one in series:
        item = one.get(dj.SERIES_NUMBER)
        values = item.get("Value") if item else None
        if not values or type(number := values[0]) is not int or number <= previous:
            return sorted(series, key=_series_order_fast)
        previous = number
    return series


def _series_order_fast(ds: dj.Dataset) -> tuple[int, str]:
    """_series_order, with a SeriesNumber that is already a non-negative int read inline."""
    item = ds.get(dj.SERIES_NUMBER)
    values = item.get("Value") if item else None
    first = values[0] if values else None
    number = first if type(first) is int and first >= 0 else dj.unsigned(first) if values else None
    uid_item = ds.get(dj.SERIES_INSTANCE_UID)
    uids = uid_item.get("Value") if uid_item else None
    return (number if number is not None else 1 << 31, str(uids[0]) if uids else "")


_instance_order = _order(dj.INSTANCE_NUMBER, dj.SOP_INSTANCE_UID)


@dataclass(frozen=True)
class StudyMapper:
    """Maps one study (with its series and, when known, instances) to an ImagingStudy dict."""

    study_rows: tuple[Row, ...]
    series_rows: tuple[Row, ...]
    instance_rows: tuple[Row, ...]
    terminology: Terminology
    # `(ds, ctx, out) -> out` for each level: the rows compiled into functions (app.core.mapping.compile),
    # or, when None, the rows interpreted by _apply. Both give the same output and the same issues.
    study_fields: Fields | None = field(default=None, compare=False)
    series_fields: Fields | None = field(default=None, compare=False)
    instance_fields: Fields | None = field(default=None, compare=False)
    _study_fields: Fields = field(init=False, repr=False, compare=False)
    _series_fields: Fields = field(init=False, repr=False, compare=False)
    _instance_fields: Fields = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_study_fields", self.study_fields or partial(_apply, self.study_rows))
        object.__setattr__(self, "_series_fields", self.series_fields or partial(_apply, self.series_rows))
        object.__setattr__(self, "_instance_fields", self.instance_fields or partial(_apply, self.instance_rows))

    @property
    def compiled(self) -> bool:
        return self.study_fields is not None

    def map_study(
        self,
        study: dj.Dataset,
        series: Sequence[dj.Dataset],
        instances: Mapping[str, Sequence[dj.Dataset]] | None,
        trust: TrustMapping,
        subject: dict[str, Any],
        issues: list[dict[str, Any]],
    ) -> dict[str, Any] | None:
        """The ImagingStudy, or None (reported) when the study has no valid StudyInstanceUID."""
        if self.study_fields is not None:
            return self._map_compiled(study, series, instances, trust, subject, issues)
        study_uid = dj.uid(study, dj.STUDY_INSTANCE_UID)
        ctx = MappingContext(trust, self.terminology, subject, study_uid or "?", issues)
        if study_uid is None:
            ctx.report("ImagingStudy.identifier", "StudyInstanceUID is missing or not a valid UID; study left out")
            return None
        ctx.study_offset = dj.first_text(study, dj.TIMEZONE_OFFSET_FROM_UTC)
        out = self._study_fields(study, ctx, {"resourceType": "ImagingStudy", "id": study_uid})
        ordered = sorted(series, key=_series_order) if len(series) > 1 else series
        mapped = [s for s in (self._series(s, instances, ctx) for s in ordered) if s]
        if mapped:
            out["series"] = mapped
        if series:
            self._derive_counts(out, mapped, len(series))
        return out

    def _map_compiled(
        self,
        study: dj.Dataset,
        series: Sequence[dj.Dataset],
        instances: Mapping[str, Sequence[dj.Dataset]] | None,
        trust: TrustMapping,
        subject: dict[str, Any],
        issues: list[dict[str, Any]],
    ) -> dict[str, Any] | None:
        """map_study with the compiled fields: the same steps, the same output and issues, written
        for speed (the common shapes read inline, one loop over the series, no intermediate lists)."""
        e = study.get(dj.STUDY_INSTANCE_UID)
        if e is not None and type(vs := e.get("Value")) is list and vs and (type(h := vs[0]) is str or type(h) is UID):
            h = h.strip()
            study_uid = h if h and dj.is_uid(h) else dj.uid(study, dj.STUDY_INSTANCE_UID)
        else:
            study_uid = dj.uid(study, dj.STUDY_INSTANCE_UID)
        ctx = MappingContext(trust, self.terminology, subject, study_uid or "?", issues)
        if study_uid is None:
            ctx.report("ImagingStudy.identifier", "StudyInstanceUID is missing or not a valid UID; study left out")
            return None
        if dj.TIMEZONE_OFFSET_FROM_UTC in study:
            ctx.study_offset = dj.first_text(study, dj.TIMEZONE_OFFSET_FROM_UTC)
        out = self._study_fields(study, ctx, {"resourceType": "ImagingStudy", "id": study_uid})
        if not series:
            return out
        series_fields = self._series_fields
        mapped = []
        for one in _in_order(series):
            fields = series_fields(one, ctx, {})
            if "uid" not in fields or "modality" not in fields:
                ctx.report("ImagingStudy.series", "a series without a valid SeriesInstanceUID or Modality was left out")
                continue
            if instances is not None:
                found = [self._instance(i, ctx) for i in sorted(instances.get(fields["uid"], ()), key=_instance_order)]
                kept = [i for i in found if i]
                if kept:
                    fields["instance"] = kept
                fields.setdefault("numberOfInstances", len(found))
            mapped.append(fields)
        if mapped:
            out["series"] = mapped
            # _derive_counts, in one pass
            modalities = out.get("modality")
            codes = {c["code"] for c in modalities} if modalities else set()
            counted = len(mapped) == len(series) and "numberOfInstances" not in out
            total = 0
            for fields in mapped:
                coding = fields["modality"]
                if coding["code"] not in codes:
                    out.setdefault("modality", []).append(coding)
                    codes.add(coding["code"])
                if counted:
                    count = fields.get("numberOfInstances")
                    if count is None:
                        counted = False
                    else:
                        total += count
            if "numberOfSeries" not in out:
                out["numberOfSeries"] = len(series)
            if counted:
                out["numberOfInstances"] = total
        elif "numberOfSeries" not in out:
            out["numberOfSeries"] = len(series)
        return out

    def _series(
        self, series: dj.Dataset, instances: Mapping[str, Sequence[dj.Dataset]] | None, ctx: MappingContext
    ) -> dict[str, Any] | None:
        out = self._series_fields(series, ctx, {})
        if "uid" not in out or "modality" not in out:
            ctx.report("ImagingStudy.series", "a series without a valid SeriesInstanceUID or Modality was left out")
            return None
        if instances is not None:
            found = [self._instance(i, ctx) for i in sorted(instances.get(out["uid"], ()), key=_instance_order)]
            kept = [i for i in found if i]
            if kept:
                out["instance"] = kept
            out.setdefault("numberOfInstances", len(found))
        return out

    def _instance(self, instance: dj.Dataset, ctx: MappingContext) -> dict[str, Any] | None:
        out = self._instance_fields(instance, ctx, {})
        if "uid" not in out or "sopClass" not in out:
            ctx.report(
                "ImagingStudy.series.instance", "an instance without a valid SOPInstanceUID or SOPClassUID was left out"
            )
            return None
        return out

    @staticmethod
    def _derive_counts(out: dict[str, Any], series: list[dict[str, Any]], received: int) -> None:
        """Fill what the archive did not send from the series we hold; union the modalities.

        numberOfSeries counts every series the archive returned, mapped or not (FHIR: it may be
        larger than the number of series elements); numberOfInstances only when every count is known.
        """
        codes = {c["code"] for c in out.get("modality", ())}
        extra = [s["modality"] for s in series if s["modality"]["code"] not in codes]
        for coding in extra:
            if coding["code"] not in codes:
                out.setdefault("modality", []).append(coding)
                codes.add(coding["code"])
        out.setdefault("numberOfSeries", received)
        if (
            "numberOfInstances" not in out
            and series
            and len(series) == received
            and all("numberOfInstances" in s for s in series)
        ):
            out["numberOfInstances"] = sum(s["numberOfInstances"] for s in series)
