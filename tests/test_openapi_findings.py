"""Regressions for what describing the API in OpenAPI and fuzzing it with schemathesis brought up.

Each of these once answered 500 (or an error in the wrong format, or without a required header).
The `client` fixture also fails any 500 and checks every FHIR resource it gets.
"""

from __future__ import annotations

from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from smart_tokens import system_token

from app.core.search.dates import DateValueError, dicom_bounds, parse_filter

NHS = "9992975962"
STUDY = "2.25.7492698656716832304557205269405902835"
SERIES = "2.25.109947854258270594202602255132433494957"
INSTANCE = "2.25.234405553998416918436261809104547925191"
TIMELINE = {
    "response_type": "code",
    "client_id": "imaging-timeline",
    "scope": "launch/patient patient/*.rs",
    "redirect_uri": "http://127.0.0.1:8080/apps/imaging-timeline/",
    "aud": "http://127.0.0.1:8080/fhir",
    "state": "s",
    "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    "code_challenge_method": "S256",
}


def outcome(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


def oauth_error(response, status: int, error: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == error, body
    return body


# ------------------------------------------------------------------------------ FHIR search values


@pytest.mark.parametrize(
    "path", ["/fhir/ImagingStudy?patient=" + NHS, "/fhir/Patient?_id=" + NHS, "/fhir/Endpoint?", "/fhir/AuditEvent?"]
)
def test_a_count_of_non_ascii_digits_is_400(client, path: str) -> None:
    # "²".isdigit() is True, int("²") raises: it was a 500.
    body = outcome(client.get(f"{path}&_count={quote('²')}"), 400)
    assert body["issue"][0]["expression"] == ["_count"]


def test_a_cursor_with_non_ascii_characters_is_400(client) -> None:
    # hmac.compare_digest refuses non-ASCII str with a TypeError: it was a 500 (found by schemathesis).
    for cursor in ("a.é", "é", "eyJ0IjoiUGF0aWVudCJ9.ü"):
        outcome(client.get("/fhir/Patient", query_string={"_cursor": cursor}), 400)
        outcome(client.get("/fhir/ImagingStudy", query_string={"_cursor": cursor}), 400)


@pytest.mark.parametrize(
    "value",
    [
        "9999",
        "9999-12",
        "9999-12-31",
        "le9999-12-31T23:59:59Z",
        "0001",
        "0001-01-01T00:00+14:00",
        "2020-01-01T00:00+24:00",
        "２０２０",
        "2020\n",
    ],
)
def test_dates_outside_the_calendar_or_not_ascii_are_400(client, value: str) -> None:
    # Year 10000 and year 0 (after the zone) overflowed datetime: they were 500s.
    outcome(client.get("/fhir/ImagingStudy", query_string={"patient": NHS, "started": value}), 400)
    outcome(client.get("/fhir/AuditEvent", query_string={"date": f"ge{value}"}), 400)


def test_dates_near_the_calendar_edges_still_work() -> None:
    london = ZoneInfo("Europe/London")
    for value in ("ge0001-01-03", "le9999-12-29", "9999-12-29", "0001-01-03T00:00-23:59"):
        dicom_bounds((parse_filter(value, london),), london)
    # DICOM dates are YYYYMMDD: the year of a far bound keeps its four digits (strftime's %Y does not).
    assert dicom_bounds((parse_filter("ge0002-06-01", london),), london) == ("00020531", None)
    with pytest.raises(DateValueError):
        parse_filter("0001-01-01", london)


def test_a_uid_with_a_final_newline_is_not_a_uid(client) -> None:
    # UID_PATTERN ended in $, which matches before a final newline: the study query refused it later (500).
    outcome(client.get(f"/fhir/ImagingStudy/{STUDY}%0A"), 404)
    assert client.get(f"/fhir/ImagingStudy/{STUDY}").status_code == 200


def test_a_rendering_parameter_with_a_final_newline_is_refused(app) -> None:
    # The values are relayed to the archive unescaped: "80\n" matched ^...$ and went upstream.
    http, bearer = app.test_client(), {"Authorization": f"Bearer {system_token(app)}"}
    base = f"/dicomweb/bolton/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}/rendered"
    assert http.get(base, query_string={"quality": "80"}, headers=bearer).mimetype == "image/jpeg"
    for name, value in (("quality", "80\n"), ("viewport", "64,64\n"), ("window", "40,400,linear\n")):
        outcome(http.get(base, query_string={name: value}, headers=bearer), 400)


# ----------------------------------------------------------------------------- methods and /auth


def test_405_says_which_methods_are_allowed(client, app) -> None:
    response = client.put(f"/fhir/ImagingStudy/{STUDY}")
    outcome(response, 405)
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    response = app.test_client().delete("/auth/token")
    oauth_error(response, 405, "invalid_request")
    assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}


def test_the_authorization_server_answers_oauth_errors_not_operation_outcomes(app) -> None:
    http = app.test_client()
    oauth_error(http.get("/auth/token"), 405, "invalid_request")
    oauth_error(http.get("/auth/no-such-endpoint"), 404, "invalid_request")
    assert http.get("/fhir/no-such-type").get_json()["resourceType"] == "OperationOutcome"


def test_revoke_needs_a_token(app) -> None:
    http = app.test_client()
    oauth_error(http.post("/auth/revoke"), 400, "invalid_request")
    oauth_error(http.post("/auth/revoke", data={"client_id": "imaging-timeline"}), 400, "invalid_request")
    assert http.post("/auth/revoke", data={"token": "x", "client_id": "imaging-timeline"}).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        [None, None],
        [],
        "text",
        42,
        {"client_id": "imaging-timeline", "patient": NHS, "imaging_study": {}},
        {"client_id": "imaging-timeline", "patient": NHS, "imaging_study": "../Patient/x"},
        {"client_id": "imaging-timeline", "patient": int(NHS)},
        {"client_id": ["imaging-timeline"], "patient": NHS},
    ],
)
def test_a_launch_request_that_is_not_an_object_of_strings_is_400(app, body) -> None:
    # A JSON array was a 500; a study that is not a UID went into the launch context as ImagingStudy/<anything>.
    bearer = {"Authorization": f"Bearer {system_token(app, 'system/ImagingStudy.rs')}"}
    oauth_error(app.test_client().post("/auth/launch", json=body, headers=bearer), 400, "invalid_request")


def test_a_launch_request_with_a_study_or_with_none(app) -> None:
    bearer = {"Authorization": f"Bearer {system_token(app, 'system/ImagingStudy.rs')}"}
    for study in (STUDY, None):
        response = app.test_client().post(
            "/auth/launch",
            headers=bearer,
            json={"client_id": "imaging-timeline", "patient": NHS, "imaging_study": study},
        )
        assert response.status_code == 201, response.get_data(as_text=True)


def test_a_non_ascii_csrf_token_is_a_failed_login_not_a_500(app) -> None:
    http = app.test_client()
    assert http.get("/auth/authorize", query_string=TIMELINE).status_code == 200  # the login page, a session
    response = http.post(
        "/auth/authorize",
        data={**TIMELINE, "step": "login", "csrf": "é", "username": "dr.khan", "password": "imaging-demo"},
    )
    assert response.status_code == 401 and response.mimetype == "text/html"
