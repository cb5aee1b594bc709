"""The sample SMART app in a real browser: Debian's Chromium, driven by playwright-core.

One real server (`python -m app serve`, gunicorn) serves the FHIR API, the authorization server
and the app at /apps/imaging-timeline/. The app is SMART's own client-js (npm `fhirclient`).

(a) EHR launch: the portal (Backend Services) asks POST /auth/launch for the multi-trust patient;
    the browser opens the app with ?launch=&iss=, signs in as dr.khan and allows; the table must
    hold exactly the patient's studies (the UIDs a system-token search returns), with trust
    names and body parts; no patient banner (need_patient_banner is false in an EHR launch).
(b) Standalone launch: the plain app URL, sign in, search the patient by NHS number in the
    picker, choose, allow; the same studies and the patient banner (name, NHS number).

Screenshots of both final pages: test-artifacts/e2e-ehr-launch.png, e2e-standalone-launch.png.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from conftest import HTTP_TIMEOUT_S, ROOT, backend_token, search_all, timeline_url

from app.core import display

pytestmark = pytest.mark.integration

USER, PASSWORD = "dr.khan", "imaging-demo"
DATE_COLUMN, MODALITY_COLUMN, TRUST_COLUMN, ACCESSION_COLUMN, IMAGES_COLUMN, REPORT_COLUMN = 0, 1, 3, 4, 5, 6
HEADERS = ["Date", "Modality", "Description", "Trust", "Accession", "Images", "Report", "Actions"]
# A report's status as the clinician reads it (the app's own wording, not FHIR's code).
REPORT_STATUS_WORDS = {"final": "Final report", "preliminary": "Preliminary report", "amended": "Amended report"}
SCREENSHOTS = ROOT / "docs" / "screenshots"
SERIOUS = {"serious", "critical"}


@pytest.fixture(scope="module")
def facade(start_facade: Any) -> Any:
    return start_facade("browser")


@pytest.fixture(scope="module")
def patient(manifest: dict[str, Any]) -> str:
    return str(manifest["facts"]["multi_trust_patient"]["nhs_number"])


@pytest.fixture(scope="module")
def expected(facade: Any, patient: str) -> dict[str, Any]:
    """The patient's studies, their trusts and body parts, by a system-level search."""
    token = backend_token(facade)
    entries = search_all(facade.base, token, "ImagingStudy", {"patient": patient, "_include": "ImagingStudy:endpoint"})
    studies = {e["resource"]["id"]: e["resource"] for e in entries if e["resource"]["resourceType"] == "ImagingStudy"}
    endpoints = {e["resource"]["id"]: e["resource"] for e in entries if e["resource"]["resourceType"] == "Endpoint"}
    trusts, body_parts = {}, {}
    for uid, study in studies.items():
        # A study merged from two archives names the second on the series it added.
        refs = study.get("endpoint", []) + [r for s in study.get("series", []) for r in s.get("endpoint", [])]
        ids = {ref["reference"].split("/")[-1] for ref in refs}
        assert ids <= set(endpoints), f"_include=ImagingStudy:endpoint left out {ids - set(endpoints)}"
        trusts[uid] = {endpoints[i]["managingOrganization"]["display"] for i in ids}
        body_parts[uid] = {s["bodySite"]["display"] for s in study.get("series", []) if s.get("bodySite")}
    patient_resource = requests.get(
        f"{facade.base}/Patient/{patient}", timeout=HTTP_TIMEOUT_S, headers={"Authorization": f"Bearer {token}"}
    ).json()
    return {"studies": studies, "trusts": trusts, "body_parts": body_parts, "patient": patient_resource}


def _diagnose(result: dict[str, Any]) -> str:
    keys = ("error", "status", "steps", "console", "pageErrors", "requestsFailed", "httpErrors", "stderr", "finalUrl")
    return "\n".join(f"{k}: {result.get(k)}" for k in keys if result.get(k))


def _accession(study: dict[str, Any]) -> str:
    return next(
        (
            i["value"]
            for i in study.get("identifier", [])
            if any(c["code"] == "ACSN" for c in i.get("type", {}).get("coding", []))
        ),
        "",
    )


def _check_table(result: dict[str, Any], expected: dict[str, Any], manifest: dict[str, Any], patient: str) -> None:
    assert result["exitCode"] == 0, _diagnose(result)
    rows = {row["uid"]: row["cells"] for row in result["rows"]}
    assert len(rows) == len(result["rows"]), f"duplicate rows: {[r['uid'] for r in result['rows']]}"
    assert set(rows) == set(expected["studies"]), "the table must list exactly the patient's studies"
    in_manifest = {s["study_uid"] for p in manifest["patients"] if p["nhs_number"] == patient for s in p["studies"]}
    assert set(rows) == in_manifest
    assert [h.strip() for h in result["headers"]] == HEADERS
    for uid, cells in rows.items():
        study = expected["studies"][uid]
        for trust in expected["trusts"][uid]:
            assert trust in cells[TRUST_COLUMN], f"{uid}: trust {trust!r} not in {cells}"
        assert study["modality"][0]["code"] in cells[MODALITY_COLUMN]
        # One date format (NHS style), the accession number and the number of images.
        assert cells[DATE_COLUMN] == display.format_datetime(study.get("started")), cells
        assert cells[ACCESSION_COLUMN] == (_accession(study) or "Not recorded"), cells
        if "numberOfInstances" in study:
            assert cells[IMAGES_COLUMN] == str(study["numberOfInstances"]), cells
    # The patient's studies come from four trusts; the shared study from two at once.
    all_trusts = set().union(*expected["trusts"].values())
    assert len(all_trusts) >= 2
    shared = manifest["facts"]["shared_study"]
    if shared["nhs_number"] == patient:
        assert len(expected["trusts"][shared["study_uid"]]) == len(shared["trusts"])
    assert result["status"]["state"] == "ready"
    # The count alone in the status; warnings, if any, in callouts of their own.
    assert result["status"]["text"] == f"Showing {len(rows)} studies."
    assert not result["pageErrors"], result["pageErrors"]
    # Every request of the flow answered (but a browser's own /favicon.ico on the server's pages).
    assert [e for e in result["httpErrors"] if not e.endswith("/favicon.ico")] == [], result["httpErrors"]
    # The user's name, not their FHIR reference.
    assert result.get("signedIn") == "Signed in as Dr Aisha Khan"
    # The first study's details row, opened from the keyboard: reason, referrer, site, body part.
    details = result["details"]
    assert details["expanded"] == "true"
    for label in ("Reason", "Referrer", "Site", "Body part"):
        assert label in details["text"], details


def _check_axe(result: dict[str, Any], pages: list[str]) -> None:
    """axe-core found no serious or critical violation on any page of the flow."""
    assert sorted(result["axe"]) == sorted(pages), result["axe"].keys()
    serious = {page: [v for v in found if v["impact"] in SERIOUS] for page, found in result["axe"].items()}
    assert serious == {page: [] for page in pages}, serious


def test_ehr_launch_lists_the_patients_studies(facade, patient, expected, manifest, drive, artifacts):
    token = backend_token(facade)
    launched = requests.post(
        f"{facade.origin}/auth/launch",
        json={"client_id": "imaging-timeline", "patient": patient},
        headers={"Authorization": f"Bearer {token}"},
        timeout=HTTP_TIMEOUT_S,
    )
    assert launched.status_code == 201, launched.text
    launch = launched.json()
    assert launch["iss"] == facade.base
    url = f"{timeline_url(facade.port)}?{requests.compat.urlencode({'launch': launch['launch'], 'iss': launch['iss']})}"

    result = drive(url, username=USER, password=PASSWORD, screenshot=str(artifacts / "e2e-ehr-launch.png"), axe=True)

    _check_table(result, expected, manifest, patient)
    assert [s["name"] for s in result["steps"]] == ["login", "consent", "app"], "an EHR launch needs no picker"
    assert display.format_nhs_number(patient) in result["consentText"]
    _check_axe(result, ["sign-in", "consent", "timeline"])
    assert result["banner"]["visible"] is False, "need_patient_banner is false in an EHR launch: no banner"
    # client-js took code and state out of the address bar.
    assert result["finalUrl"] == timeline_url(facade.port)


def test_standalone_launch_with_patient_picker(facade, patient, expected, manifest, drive, artifacts):
    imaged = _study_to_open(expected, manifest)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    result = drive(
        timeline_url(facade.port),
        username=USER,
        password=PASSWORD,
        patient=patient,
        screenshot=str(artifacts / "e2e-standalone-launch.png"),
        openStudy=imaged["id"],
        gpu=True,
        axe=True,
        narrow=True,
        shots=str(SCREENSHOTS),
        timeout_s=150,
    )

    _check_table(result, expected, manifest, patient)
    assert [s["name"] for s in result["steps"]] == ["login", "picker", "consent", "app", "viewer"]
    person = expected["patient"]
    name = display.format_name(person["name"][0])
    # The picker and the app show the same facts the same way (app.core.display, shared/format.js).
    facts = [name, display.format_nhs_number(patient), display.format_date(person.get("birthDate"))]
    row = next(r for r in result["pickerRows"] if display.format_nhs_number(patient) in r)
    for fact in [*facts, display.format_gender(person.get("gender"))]:
        assert fact in row, (fact, row)
    banner = result["banner"]
    assert banner["visible"] is True, "a standalone launch must show the patient banner"
    for fact in facts:
        assert fact in banner["text"], (fact, banner)
    assert result["finalUrl"] == timeline_url(facade.port)
    # Usable from 360 px: no sideways scrolling, the banner stays at the top when the page scrolls.
    assert result["narrow"]["scrollWidth"] <= 360, result["narrow"]
    assert result["narrow"]["bannerSticky"] == "sticky" and result["narrow"]["bannerTop"] == 0, result["narrow"]
    _check_viewer(result, imaged, expected)
    _check_axe(result, ["sign-in", "picker", "consent", "timeline", "viewer"])
    names = {"sign-in", "picker", "consent", "timeline", "timeline-360px", "viewer"}
    assert {p.rsplit("/", 1)[-1].removesuffix(".png") for p in result["shots"]} == names


NON_IMAGE_MODALITIES = {"SR", "KO", "PR", "DOC"}


def _study_to_open(expected: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The patient's CT study whose first series is a real-sized stack (facts.full_size_studies), with
    images in every series; of several, the one whose first series has the most images."""
    full_size = set(manifest["facts"].get("full_size_studies", []))

    def first(study: dict[str, Any]) -> dict[str, Any]:
        return min(study["series"], key=lambda x: x.get("number", 0))

    candidates = [
        s
        for s in expected["studies"].values()
        if first(s)["modality"]["code"] == "CT"
        and not {x["modality"]["code"] for x in s["series"]} & NON_IMAGE_MODALITIES
    ]
    assert candidates, "the multi-trust patient has a CT study"
    return max(candidates, key=lambda s: (s["id"] in full_size, int(first(s).get("numberOfInstances", 0)), s["id"]))


def _check_viewer(result: dict[str, Any], study: dict[str, Any], expected: dict[str, Any]) -> None:
    """The images of one study, through the gateway with the app's own token: a thumbnail per series, then
    the first series drawn by Cornerstone3D's WebGL engine (SwiftShader), scrolled by key and by wheel."""
    viewer = result.get("viewer")
    assert viewer, _diagnose(result)
    assert viewer["state"] == "ready", viewer
    assert sorted(viewer["seriesUids"]) == sorted(s["uid"] for s in study["series"])
    assert [t["loaded"] for t in viewer["thumbnails"]] == [True] * len(study["series"]), viewer["thumbnails"]
    # The WebGL path, not the server-rendered fallback: a GPU rendering engine drew non-blank pixels.
    assert viewer["renderer"] == "webgl" and viewer["gpu"] == "true", _diagnose(result)
    assert viewer["levels"] > 1, "the viewer's canvas is blank"
    assert viewer["renderedIndex"] == "0" and viewer["position"].startswith("Image 1 of ")
    # The header names the patient and the study, whatever is scrolled.
    person = expected["patient"]
    for fact in (
        display.format_name(person["name"][0]),
        display.format_nhs_number(person["id"]),
        display.format_date(person.get("birthDate")),
        display.format_datetime(study.get("started")),
        _accession(study),
    ):
        assert fact in viewer["facts"], (fact, viewer["facts"])
    count = int(viewer["position"].rsplit(" ", 1)[1])
    if count > 1:
        assert result["viewerNext"]["position"] == f"Image 2 of {count}"
        assert result["viewerNext"]["renderedIndex"] == "1" and result["viewerNext"]["levels"] > 1
    if count > 2:
        assert result["viewerWheel"]["position"] == f"Image 3 of {count}"
    # A CT preset applies to its series only: the next series opens as stored (the preset does not carry over).
    assert result["presetChosen"] == "1500,-600", _diagnose(result)
    if len(study["series"]) > 1:
        assert result["presetAfterSeries"] == "", _diagnose(result)
    # The trust's own viewer is offered when the study's trust publishes one (IHE IID).
    has_iid = any(r["reference"].endswith("-ihe-iid") for r in study.get("endpoint", []))
    assert viewer["iidVisible"] is has_iid and (not has_iid or study["id"] in viewer["iidHref"])
    assert [e for e in result["httpErrors"] if not e.endswith("/favicon.ico")] == [], result["httpErrors"]
    assert not result["pageErrors"], result["pageErrors"]


def test_app_is_served_with_its_security_headers(facade):
    page = requests.get(timeline_url(facade.port), timeout=HTTP_TIMEOUT_S)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"
    for ref in ('id="patient-banner"', 'id="studies"', 'id="status"', "../vendor/fhir-client.pure.min.js"):
        assert ref in page.text
    script = requests.get(f"{facade.origin}/apps/vendor/fhir-client.pure.min.js", timeout=HTTP_TIMEOUT_S)
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    for outside in (
        "/apps/vendor/..%2F..%2Fapps.py",
        "/apps/imaging-timeline/..%2F..%2F..%2Fconfig.py",
        "/apps/imaging-timeline/missing.js",
    ):
        assert requests.get(f"{facade.origin}{outside}", timeout=HTTP_TIMEOUT_S).status_code == 404, outside


def test_consent_form_posted_as_a_browser_posts_it_issues_a_code(app, patient):
    """The server's own forms, submitted the way a browser submits them, must end with a code.

    Each page's form is posted to its `action` resolved against the page's URL (HTML: an empty
    action is the page's own URL, query included), with its hidden fields in the body. After
    sign-in the server redirects to GET /auth/authorize?<parameters>, so with action="" the
    consent POST carries every authorization parameter twice (query and body).
    """
    import base64
    import hashlib
    import re
    import secrets
    from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

    client = app.test_client()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = "http://127.0.0.1:8080/apps/imaging-timeline/"
    params = {
        "response_type": "code",
        "client_id": "imaging-timeline",
        "redirect_uri": redirect_uri,
        "scope": "launch/patient patient/*.rs openid",
        "state": "s1",
        "aud": "http://127.0.0.1:8080/fhir",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }

    def submit(page_url: str, page: Any, fields: dict[str, str], form: int = 0) -> tuple[str, Any]:
        """Post form number `form` of the page as a browser would: its action, its hidden fields."""
        html = page.get_data(as_text=True)
        forms = re.findall(r'<form method="post" action="([^"]*)">(.*?)</form>', html, re.S)
        action, body = forms[form]
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', body))
        target = urljoin(page_url, action.replace("&amp;", "&"))
        return target, client.post(target, data={**hidden, **fields})

    url = f"/auth/authorize?{urlencode(params)}"
    login = client.get(url)
    _, signed_in = submit(url, login, {"username": USER, "password": PASSWORD})
    assert signed_in.status_code == 303
    picker_url = signed_in.headers["Location"]
    picker = client.get(picker_url)
    searched_url, searched = submit(picker_url, picker, {"q": patient})
    assert b'button class="choose"' in searched.data
    consent_url, consent = submit(searched_url, searched, {}, form=1)
    assert b'id="allow"' in consent.data, consent.get_data(as_text=True)[:1000]
    _, allowed = submit(consent_url, consent, {"decision": "allow"})
    assert allowed.status_code == 302
    query = parse_qs(urlsplit(allowed.headers["Location"]).query)
    assert "error" not in query, f"consent refused: {query}"
    assert query["state"] == ["s1"] and query["code"]


def test_ehr_launch_through_the_launcher(facade, patient, expected, drive):
    """The EHR launch simulator end to end: the clinician signs in with the authorization server's own
    page, finds the patient by NHS number, chooses a study and the imaging timeline, launches; the app
    runs its EHR launch inside the EPR's frame (consent there, no patient picker), under the EPR's
    banner, and lists the patient's studies."""
    study = sorted(expected["studies"])[0]
    result = drive(
        f"{facade.origin}/apps/launcher/",
        username=USER,
        password=PASSWORD,
        launcher={"patient": patient, "study": study},
        axe=True,
        shots=str(SCREENSHOTS),
    )
    assert result["exitCode"] == 0, _diagnose(result)
    assert "/auth/signin" in result["signInUrl"], "the simulator signs in with the authorization server's page"
    assert [s["name"] for s in result["steps"]] == [
        "launcher-sign-in",
        "launcher",
        "ehr-frame",
        "consent-in-frame",
        "app-in-frame",
    ]
    person = expected["patient"]
    name = display.format_name(person["name"][0])
    assert any(name in row and display.format_nhs_number(patient) in row for row in result["launcherRows"])
    assert len(result["studyChoices"]) == len(expected["studies"]) + 1  # every study, and "no study"
    # The EPR's own banner; the app shows none (need_patient_banner is false in an EHR launch).
    assert name in result["ehrBanner"] and display.format_nhs_number(patient) in result["ehrBanner"]
    assert result["banner"]["visible"] is False
    assert display.format_nhs_number(patient) in result["consentText"]
    assert sorted(result["rows"]) == sorted(expected["studies"])
    assert result["status"]["text"] == f"Showing {len(expected['studies'])} studies."
    assert result["frameUrl"] == timeline_url(facade.port)  # client-js took launch, code and state out
    assert result["signedIn"] == "Signed in as Dr Aisha Khan"
    # The chosen study travelled in the launch context (fhirContext): the app opened at its images.
    opened = result["launchedViewer"]
    assert opened["visible"] and opened["state"] == "ready", opened
    assert sorted(opened["seriesUids"]) == sorted(s["uid"] for s in expected["studies"][study]["series"])
    _check_axe(result, ["launcher", "ehr-launch"])
    assert not result["pageErrors"], result["pageErrors"]
    assert [e for e in result["httpErrors"] if not e.endswith("/favicon.ico")] == [], result["httpErrors"]


def test_launcher_is_for_the_demo_only_and_signed_in_users(facade):
    """Without a sign-in the simulator sends the browser to the authorization server's sign-in; a launch
    posted without the sign-in's form value (CSRF) is refused."""
    page = requests.get(f"{facade.origin}/apps/launcher/", timeout=HTTP_TIMEOUT_S, allow_redirects=False)
    assert page.status_code == 303 and page.headers["Location"].endswith("/auth/signin")
    posted = requests.post(
        f"{facade.origin}/apps/launcher/launch",
        data={"app": "imaging-timeline", "patient": "9434765919"},
        timeout=HTTP_TIMEOUT_S,
        allow_redirects=False,
    )
    assert posted.status_code == 303  # not signed in: no launch, back to the sign-in


def test_launcher_and_its_sign_in_exist_in_the_demo_only(settings):
    import dataclasses

    from app import create_app

    production = create_app(dataclasses.replace(settings, demo=False)).test_client()
    assert production.get("/apps/launcher/").status_code == 404
    assert production.get("/auth/signin").status_code == 404
    assert production.post("/apps/launcher/launch", data={"app": "imaging-timeline"}).status_code == 404


def test_differing_demographics_are_a_warning_callout_in_clinical_words(facade, manifest, drive):
    """A patient whose date of birth differs between trusts: the warning stands apart from the count, in the
    words a clinician reads (which fact, at which trusts, what to do), not the API's diagnostics."""
    conflict = manifest["facts"]["demographic_conflict"]
    result = drive(timeline_url(facade.port), username=USER, password=PASSWORD, patient=conflict["nhs_number"])
    assert result["exitCode"] == 0, _diagnose(result)
    assert result["status"]["text"].startswith("Showing ") and "differ" not in result["status"]["text"]
    warning = next(w for w in result["warnings"] if "Patient details differ between trusts" in w)
    assert "date of birth recorded for this patient is not the same at every trust" in warning
    assert "Check the patient's identity" in warning
    assert "Patient/" not in warning and "archives" not in warning  # not the engineering wording


def _ehr_launch_url(facade: Any, patient: str) -> str:
    launched = requests.post(
        f"{facade.origin}/auth/launch",
        json={"client_id": "imaging-timeline", "patient": patient},
        headers={"Authorization": f"Bearer {backend_token(facade)}"},
        timeout=HTTP_TIMEOUT_S,
    )
    assert launched.status_code == 201, launched.text
    launch = launched.json()
    return (
        f"{timeline_url(facade.port)}?{requests.compat.urlencode({'launch': launch['launch'], 'iss': launch['iss']})}"
    )


def _reports_of_a_patient_with(
    facade: Any, manifest: dict[str, Any], modality: str
) -> tuple[str, list[dict[str, Any]]]:
    """The first demo patient with a study holding a `modality` series (SR, DOC), and their reports, by a
    system-level DiagnosticReport search."""
    nhs = next(p["nhs_number"] for p in manifest["patients"] if any(modality in s["modalities"] for s in p["studies"]))
    token = backend_token(facade, "system/ImagingStudy.rs system/DiagnosticReport.rs system/Patient.rs")
    entries = search_all(facade.base, token, "DiagnosticReport", {"patient": nhs})
    return nhs, [e["resource"] for e in entries if e["resource"]["resourceType"] == "DiagnosticReport"]


def _study_of(report: dict[str, Any]) -> str:
    return str(report["imagingStudy"][0]["reference"]).rsplit("/", 1)[-1]


def test_reports_beside_their_studies_conclusion_and_pdf(facade, manifest, drive, artifacts):
    """Each study's imaging report in its row: the SR's status in clinical words and its conclusion, from one
    DiagnosticReport search; the PDF report opened from the keyboard, fetched with the app's bearer token
    (the gateway's token-protected route) and shown as a blob URL in a new tab. axe stays clean."""
    sr_patient, sr_reports = _reports_of_a_patient_with(facade, manifest, "SR")
    sr_report = next(r for r in sr_reports if r.get("conclusion"))
    sr_study = _study_of(sr_report)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    result = drive(
        _ehr_launch_url(facade, sr_patient),
        username=USER,
        password=PASSWORD,
        axe=True,
        screenshot=str(SCREENSHOTS / "timeline-reports.png"),
    )
    assert result["exitCode"] == 0, _diagnose(result)
    assert result["reportsState"] == "ok", result.get("warnings")
    assert [h.strip() for h in result["headers"]] == HEADERS
    rows = {row["uid"]: row["cells"] for row in result["rows"]}
    reported = {_study_of(r) for r in sr_reports}
    cell = rows[sr_study][REPORT_COLUMN]
    assert sr_report["conclusion"] in cell, cell
    assert REPORT_STATUS_WORDS[sr_report["status"]] in cell, cell
    for uid, cells in rows.items():
        if uid not in reported:
            assert cells[REPORT_COLUMN] == "No report", (uid, cells)
    # One report search per load, not one per study.
    searches = [r for r in result["requests"] if "/DiagnosticReport?" in r]
    assert len(searches) == 1, searches
    assert not result["warnings"], result["warnings"]
    assert [e for e in result["httpErrors"] if not e.endswith("/favicon.ico")] == [], result["httpErrors"]
    _check_axe(result, ["sign-in", "consent", "timeline"])

    pdf_patient, pdf_reports = _reports_of_a_patient_with(facade, manifest, "DOC")
    pdf_report = next(r for r in pdf_reports if any(a["contentType"] == "application/pdf" for a in r["presentedForm"]))
    pdf_url = next(a["url"] for a in pdf_report["presentedForm"] if a["contentType"] == "application/pdf")
    # The route wants a token: no bearer, no PDF.
    assert requests.get(pdf_url, timeout=HTTP_TIMEOUT_S).status_code == 401
    result = drive(
        _ehr_launch_url(facade, pdf_patient),
        username=USER,
        password=PASSWORD,
        axe=True,
        reportPdf=_study_of(pdf_report),
        narrow=True,
        screenshot=str(artifacts / "e2e-report-pdf.png"),
    )
    assert result["exitCode"] == 0, _diagnose(result)
    opened = result["reportPdf"]
    assert opened["url"] == pdf_url and opened["status"] == 200, opened
    assert opened["bearer"] is True, "the app fetches the PDF with its access token"
    assert opened["contentType"].startswith("application/pdf") and opened["firstBytes"] == "%PDF-", opened
    assert opened["blobUrl"].startswith("blob:") and opened["popupUrl"] == opened["blobUrl"], opened
    assert opened["note"] == "The report opened in a new tab.", opened
    assert result["tableOverflow"] == 0, "with a report column the table still fits 1280 px without scrolling"
    # The report and its PDF button fit a 360 px card: no sideways scrolling.
    assert result["narrow"]["scrollWidth"] <= 360, result["narrow"]
    assert "open-pdf" in opened["focused"], "the keyboard focus stays on the button"
    assert (
        REPORT_STATUS_WORDS[pdf_report["status"]]
        in dict((r["uid"], r["cells"]) for r in result["rows"])[_study_of(pdf_report)][REPORT_COLUMN]
    )
    _check_axe(result, ["sign-in", "consent", "timeline"])


def test_without_the_report_scope_the_timeline_says_reports_are_unavailable(start_facade, manifest, drive):
    """A server that registered the app without DiagnosticReport: the app's request for it is narrowed away,
    the app makes no report search, lists the studies all the same and says, in clinical words, that the
    reports are not shown."""
    narrowed = start_facade(
        "browser-no-reports",
        client_scopes={
            "imaging-timeline": "launch launch/patient patient/Patient.rs patient/ImagingStudy.rs "
            "patient/Endpoint.rs openid fhirUser offline_access"
        },
    )
    sr_patient, sr_reports = _reports_of_a_patient_with(narrowed, manifest, "SR")
    assert sr_reports, "the patient has reports the app is not allowed to read"
    result = drive(_ehr_launch_url(narrowed, sr_patient), username=USER, password=PASSWORD, axe=True)
    assert result["exitCode"] == 0, _diagnose(result)
    assert result["reportsState"] == "no-scope"
    assert result["status"]["text"] == f"Showing {len(result['rows'])} studies."
    assert [r for r in result["requests"] if "/DiagnosticReport" in r] == []
    warning = next(w for w in result["warnings"] if "Reports are not shown" in w)
    assert "The studies are listed" in warning and "DiagnosticReport" not in warning and "scope" not in warning
    assert {row["cells"][REPORT_COLUMN] for row in result["rows"]} == {"Report unavailable"}
    _check_axe(result, ["sign-in", "consent", "timeline"])


def test_viewer_falls_back_to_server_rendered_images_without_webgl(facade, patient, expected, manifest, drive):
    """A browser without WebGL gets the server-rendered view of the same series (/rendered per image, through
    the gateway with the app's token), scrolled with the Next image button."""
    imaged = _study_to_open(expected, manifest)
    result = drive(timeline_url(facade.port), username=USER, password=PASSWORD, patient=patient, openStudy=imaged["id"])
    assert result["exitCode"] == 0, _diagnose(result)
    viewer = result["viewer"]
    assert viewer["renderer"] == "server" and viewer["state"] == "ready", viewer
    assert viewer["frameWidth"] > 0 and viewer["frameSrc"].startswith("blob:")
    assert [t["loaded"] for t in viewer["thumbnails"]] == [True] * len(imaged["series"])
    count = int(viewer["position"].rsplit(" ", 1)[1])
    if count > 1:
        assert result["viewerNext"]["position"] == f"Image 2 of {count}"
        assert result["viewerNext"]["frameWidth"] > 0 and result["viewerNext"]["frameSrc"] != viewer["frameSrc"]
    assert not result["pageErrors"], result["pageErrors"]
