/*
 * Imaging timeline: a SMART App Launch 2.2 public client built on SMART's client-js (global FHIR).
 *
 *   EHR launch:        index.html?launch=<id>&iss=<FHIR base>  -> authorize with scope "launch ..."
 *   Standalone launch: index.html                              -> authorize with "launch/patient ..."
 *                                                                 (the server shows its patient picker)
 *   Redirect back:     index.html?code=...&state=...           -> FHIR.oauth2.ready(), then render
 *
 * The page lists the patient's studies across every trust:
 *   GET ImagingStudy?patient=<id>&_include=ImagingStudy:endpoint   (every page)
 * and, when the token response says need_patient_banner, a banner from GET Patient/<id>.
 *
 * "View images" opens a study through the trust's WADO-RS Endpoint (the facade's gateway, which wants
 * the same access token: SMART Imaging Access): a thumbnail per series, then the series' images one
 * at a time (series metadata for the instance list, /rendered for each image). Images are fetched
 * with the Authorization header and shown from blob: URLs; nothing about them is cached.
 */
(function () {
  "use strict";

  var CLIENT_ID = "imaging-timeline";
  // client-js appends "launch" only when the scope has no "launch" in it at all, so the EHR
  // launch must name it: "launch/patient" would send the user to the picker instead.
  var EHR_SCOPE = "launch patient/*.rs openid fhirUser offline_access";
  var STANDALONE_SCOPE = "launch/patient patient/*.rs openid fhirUser offline_access";
  var NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number";
  var DICOM_UID = "urn:dicom:uid";
  var SMART_KEY = "SMART_KEY"; // where client-js keeps the key of its state in sessionStorage

  var statusBox = document.getElementById("status");

  function setStatus(state, text) {
    statusBox.dataset.state = state;
    statusBox.setAttribute("role", state === "error" ? "alert" : "status");
    statusBox.textContent = text;
  }

  function appUrl() {
    // The registered redirect URI is the app's folder URL, whatever file was opened.
    return new URL(".", window.location.href).href;
  }

  function defaultIss() {
    return window.location.origin + "/fhir";
  }

  function authorize(params) {
    return FHIR.oauth2.authorize(Object.assign({
      clientId: CLIENT_ID,
      redirectUri: appUrl(),
      pkceMode: "required"
    }, params));
  }

  // -- formatting ---------------------------------------------------------------------------
  var dateFormat = new Intl.DateTimeFormat("en-GB", {
    day: "numeric", month: "short", year: "numeric", timeZone: "Europe/London"
  });
  var timeFormat = new Intl.DateTimeFormat("en-GB", {
    hour: "2-digit", minute: "2-digit", timeZone: "Europe/London"
  });

  function formatNhsNumber(value) {
    var digits = String(value || "").replace(/\s+/g, "");
    return /^\d{10}$/.test(digits) ? digits.slice(0, 3) + " " + digits.slice(3, 6) + " " + digits.slice(6) : digits;
  }

  function formatBirthDate(value) {
    if (!value) return "Not recorded";
    var parts = value.split("-");
    if (parts.length !== 3) return value;
    return dateFormat.format(new Date(Date.UTC(+parts[0], +parts[1] - 1, +parts[2], 12)));
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "className") node.className = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function muted(text) { return el("span", { className: "muted", text: text }); }

  function unique(values) {
    var seen = Object.create(null);
    return values.filter(function (v) {
      if (!v || seen[v]) return false;
      seen[v] = true;
      return true;
    });
  }

  // -- the studies --------------------------------------------------------------------------
  function studyUid(study) {
    var found = (study.identifier || []).filter(function (i) { return i.system === DICOM_UID; })[0];
    return found && found.value ? found.value.replace(/^urn:oid:/, "") : study.id;
  }

  function endpointRefs(study) {
    // A study merged from several archives names the other archives on the series they added.
    return (study.endpoint || []).concat.apply(study.endpoint || [], (study.series || []).map(function (s) {
      return s.endpoint || [];
    }));
  }

  function trustNames(study, endpoints) {
    var refs = endpointRefs(study);
    var names = unique(refs.map(function (ref) {
      var id = String(ref.reference || "").replace(/^.*Endpoint\//, "");
      var endpoint = endpoints[id];
      var org = endpoint && endpoint.managingOrganization;
      // An Endpoint the search did not include: say which archive the reference names.
      return (org && (org.display || org.reference)) || ref.display || ref.reference;
    }));
    if (names.length) return names;
    // No endpoint at all: the trust that assigned the accession number.
    return unique((study.identifier || []).map(function (i) { return i.assigner && i.assigner.display; }));
  }

  function bodyParts(study) {
    return unique((study.series || []).map(function (s) {
      var site = s.bodySite;
      return site && (site.display || site.code);
    }));
  }

  function modalities(study) {
    var codings = (study.modality || []).concat((study.series || []).map(function (s) { return s.modality; }));
    var seen = Object.create(null);
    return codings.filter(function (c) {
      if (!c || !c.code || seen[c.code]) return false;
      seen[c.code] = true;
      return true;
    });
  }

  function description(study) {
    if (study.description) return study.description;
    var code = (study.procedureCode || [])[0];
    return code && (code.text || (code.coding && code.coding[0] && code.coding[0].display)) || "";
  }

  function dateCell(study) {
    if (!study.started) return el("td", {}, [muted("Not recorded")]);
    var when = new Date(study.started);
    if (isNaN(when.getTime())) return el("td", { text: study.started });
    var hasTime = /T\d\d:\d\d/.test(study.started);
    var label = dateFormat.format(when) + (hasTime ? ", " + timeFormat.format(when) : "");
    return el("td", {}, [el("time", { datetime: study.started, text: label })]);
  }

  function renderStudies(studies, endpoints) {
    var table = document.getElementById("studies");
    var body = table.tBodies[0];
    body.textContent = "";
    studies.sort(function (a, b) { return String(b.started || "").localeCompare(String(a.started || "")); });
    studies.forEach(function (study) {
      var mods = modalities(study).map(function (c, i) {
        var abbr = el("abbr", { className: "modality-code", title: c.display || c.code, text: c.code });
        return i ? [document.createTextNode(", "), abbr] : [abbr];
      }).reduce(function (all, part) { return all.concat(part); }, []);
      var trusts = trustNames(study, endpoints);
      var parts = bodyParts(study);
      var text = description(study);
      var seriesCount = study.numberOfSeries != null ? study.numberOfSeries : (study.series || []).length;
      body.appendChild(el("tr", { "data-study-uid": studyUid(study) }, [
        dateCell(study),
        el("td", {}, mods.length ? mods : [muted("Unknown")]),
        el("td", {}, [text ? document.createTextNode(text) : muted("No description")]),
        el("td", { className: "trust" }, trusts.length
          ? trusts.map(function (t) { return el("span", { className: "trust-name", text: t }); })
          : [muted("Unknown")]),
        el("td", { className: "body-part" }, [parts.length ? document.createTextNode(parts.join(", ")) : muted("Not recorded")]),
        el("td", { className: "num", text: String(seriesCount) }),
        el("td", {}, [imagesButton(study, endpoints)])
      ]));
    });
    var trustCount = unique([].concat.apply([], studies.map(function (s) { return trustNames(s, endpoints); }))).length;
    document.getElementById("studies-caption").textContent =
      studies.length + (studies.length === 1 ? " study" : " studies") + " from " +
      trustCount + (trustCount === 1 ? " trust" : " trusts");
    table.hidden = false;
  }

  // -- images (WADO-RS through the trust's Endpoint) -----------------------------------------------
  var WADO_RS = "dicom-wado-rs";
  var IID = "ihe-iid";
  var viewer = { client: null, objectUrls: [], generation: 0, frames: [], index: 0 };

  function endpointOf(refs, endpoints, code) {
    for (var i = 0; i < (refs || []).length; i++) {
      var id = String(refs[i].reference || "").replace(/^.*Endpoint\//, "");
      var endpoint = endpoints[id];
      if (endpoint && endpoint.status === "active" && endpoint.connectionType && endpoint.connectionType.code === code) {
        return endpoint;
      }
    }
    return null;
  }

  function imagesButton(study, endpoints) {
    if (!endpointOf(study.endpoint, endpoints, WADO_RS)) return muted("Not available");
    var button = el("button", { type: "button", className: "button-secondary view-images", text: "View images" });
    button.setAttribute("aria-label", "View images of " + (description(study) || "this study"));
    button.addEventListener("click", function () { openViewer(study, endpoints); });
    return button;
  }

  function dicomValue(dataset, tag) {
    var element = dataset[tag];
    return element && element.Value ? element.Value[0] : undefined;
  }

  async function fetchImage(url) {
    var response = await fetch(url, { headers: { Authorization: viewer.client.getAuthorizationHeader(), Accept: "image/jpeg" } });
    if (!response.ok) throw new Error("HTTP " + response.status + " for an image");
    var objectUrl = URL.createObjectURL(await response.blob());
    viewer.objectUrls.push(objectUrl);
    return objectUrl;
  }

  function releaseImages() {
    viewer.objectUrls.forEach(function (u) { URL.revokeObjectURL(u); });
    viewer.objectUrls = [];
  }

  function viewerState(state, text) {
    var section = document.getElementById("viewer");
    section.dataset.state = state;
    document.getElementById("viewer-status").textContent = text;
  }

  function fillTemplate(template, values) {
    return template.replace(/\{(studyUID|accessionNumber|patientID)\}/g, function (_, name) {
      return encodeURIComponent(values[name] || "");
    });
  }

  async function openViewer(study, endpoints) {
    var generation = ++viewer.generation;
    releaseImages();
    var section = document.getElementById("viewer");
    section.hidden = false;
    document.getElementById("viewer-title").textContent = "Images: " + (description(study) || "study");
    document.getElementById("thumbnails").textContent = "";
    document.getElementById("frame-image").removeAttribute("src");
    viewer.frames = [];
    updateFrameControls();
    viewerState("loading", "Loading series…");
    section.focus();
    var iid = endpointOf(study.endpoint, endpoints, IID);
    var iidBox = document.getElementById("viewer-iid");
    iidBox.hidden = !iid;
    if (iid) {
      var accession = (study.identifier || []).filter(function (i) {
        return i.type && (i.type.coding || []).some(function (c) { return c.code === "ACSN"; });
      })[0];
      document.getElementById("viewer-iid-link").href = fillTemplate(iid.address, {
        studyUID: studyUid(study), accessionNumber: accession && accession.value,
        patientID: String((study.subject && study.subject.reference) || "").replace(/^Patient\//, "")
      });
    }
    var uid = studyUid(study);
    var list = document.getElementById("thumbnails");
    var series = (study.series || []).slice().sort(function (a, b) { return (a.number || 0) - (b.number || 0); });
    var shown = 0;
    var failed = 0;
    await Promise.all(series.map(async function (s) {
      var endpoint = endpointOf(s.endpoint, endpoints, WADO_RS) || endpointOf(study.endpoint, endpoints, WADO_RS);
      var base = endpoint.address + "/studies/" + uid + "/series/" + s.uid;
      var label = (s.modality && s.modality.code ? s.modality.code + " " : "") + (s.description || "Series " + (s.number || ""));
      var img = el("img", { alt: "" });
      var button = el("button", { type: "button", "aria-pressed": "false", "data-series-uid": s.uid },
        [img, el("span", { className: "label", text: label })]);
      button.setAttribute("aria-label", "Show series: " + label);
      button.addEventListener("click", function () { showSeries(base, button, generation); });
      list.appendChild(el("li", {}, [button]));
      try {
        var url = await fetchImage(base + "/thumbnail");
        if (generation !== viewer.generation) return;
        img.src = url;
        shown += 1;
      } catch (error) {
        failed += 1;
        img.alt = "No preview";
      }
    }));
    if (generation !== viewer.generation) return;
    var first = list.querySelector("button");
    if (first) await showSeries(null, first, generation, series[0], uid, study, endpoints);
    if (failed) viewerState("error", failed + " of " + series.length + " series previews could not be loaded.");
  }

  async function showSeries(base, button, generation, firstSeries, uid, study, endpoints) {
    if (!base) {
      var endpoint = endpointOf(firstSeries.endpoint, endpoints, WADO_RS) || endpointOf(study.endpoint, endpoints, WADO_RS);
      base = endpoint.address + "/studies/" + uid + "/series/" + firstSeries.uid;
    }
    Array.prototype.forEach.call(document.querySelectorAll("#thumbnails button"), function (b) {
      b.setAttribute("aria-pressed", b === button ? "true" : "false");
    });
    viewerState("loading", "Loading images…");
    var response = await fetch(base + "/metadata", {
      headers: { Authorization: viewer.client.getAuthorizationHeader(), Accept: "application/dicom+json" }
    });
    if (generation !== viewer.generation) return;
    if (!response.ok) {
      viewerState("error", "The images of this series could not be listed (HTTP " + response.status + ").");
      return;
    }
    var instances = await response.json();
    instances.sort(function (a, b) { return (dicomValue(a, "00200013") || 0) - (dicomValue(b, "00200013") || 0); });
    viewer.frames = [];
    instances.forEach(function (ds) {
      if (!ds["7FE00010"] && !dicomValue(ds, "00280010")) return; // no pixels (e.g. a structured report)
      var frames = parseInt(dicomValue(ds, "00280008") || "1", 10) || 1;
      var path = base + "/instances/" + dicomValue(ds, "00080018");
      for (var n = 1; n <= frames; n++) viewer.frames.push(frames > 1 ? path + "/frames/" + n + "/rendered" : path + "/rendered");
    });
    viewer.index = 0;
    updateFrameControls();
    if (!viewer.frames.length) {
      viewerState("ready", "This series has no images to show (it may be a report or other non-image object).");
      document.getElementById("frame-image").removeAttribute("src");
      return;
    }
    await showFrame(generation);
  }

  async function showFrame(generation) {
    var img = document.getElementById("frame-image");
    try {
      var url = await fetchImage(viewer.frames[viewer.index]);
      if (generation !== viewer.generation) return;
      img.src = url;
      img.alt = "Image " + (viewer.index + 1) + " of " + viewer.frames.length;
      viewerState("ready", "Showing image " + (viewer.index + 1) + " of " + viewer.frames.length + ".");
    } catch (error) {
      viewerState("error", "The image could not be loaded: " + error.message);
    }
    updateFrameControls();
  }

  function updateFrameControls() {
    var count = viewer.frames.length;
    var slider = document.getElementById("frame-slider");
    slider.max = String(Math.max(count, 1));
    slider.value = String(viewer.index + 1);
    slider.disabled = count < 2;
    document.getElementById("frame-prev").disabled = viewer.index <= 0;
    document.getElementById("frame-next").disabled = viewer.index >= count - 1;
    document.getElementById("frame-position").textContent = count ? "Image " + (viewer.index + 1) + " of " + count : "";
  }

  function moveTo(index) {
    if (index < 0 || index >= viewer.frames.length || index === viewer.index) return;
    viewer.index = index;
    showFrame(viewer.generation);
  }

  function wireViewer(client) {
    viewer.client = client;
    document.getElementById("frame-prev").addEventListener("click", function () { moveTo(viewer.index - 1); });
    document.getElementById("frame-next").addEventListener("click", function () { moveTo(viewer.index + 1); });
    document.getElementById("frame-slider").addEventListener("change", function (e) { moveTo(parseInt(e.target.value, 10) - 1); });
    document.getElementById("viewer-close").addEventListener("click", function () {
      viewer.generation += 1;
      releaseImages();
      document.getElementById("viewer").hidden = true;
    });
  }

  function renderBanner(patient) {
    var name = (patient.name || [])[0] || {};
    var text = name.text || [].concat(name.given || [], name.family || []).join(" ") || "Name not recorded";
    var nhs = (patient.identifier || []).filter(function (i) { return i.system === NHS_NUMBER; })[0];
    document.getElementById("patient-name").textContent = text;
    document.getElementById("patient-nhs").textContent = formatNhsNumber(nhs ? nhs.value : patient.id);
    document.getElementById("patient-born").textContent = formatBirthDate(patient.birthDate);
    var gender = patient.gender || "not recorded";
    document.getElementById("patient-gender").textContent = gender.charAt(0).toUpperCase() + gender.slice(1);
    document.getElementById("patient-banner").hidden = false;
    document.title = text + " · Imaging timeline";
  }

  function problems(bundles) {
    var out = [];
    bundles.forEach(function (bundle) {
      (bundle.entry || []).forEach(function (entry) {
        var r = entry.resource || {};
        if (r.resourceType !== "OperationOutcome") return;
        (r.issue || []).forEach(function (issue) {
          if (issue.severity === "error" || issue.severity === "fatal" || issue.severity === "warning") {
            out.push(issue.diagnostics || (issue.details && issue.details.text) || issue.code);
          }
        });
      });
    });
    return unique(out);
  }

  async function show(client) {
    var patientId = client.getPatientId();
    if (!patientId) throw new Error("The launch did not give a patient.");
    wireViewer(client);
    var token = client.state.tokenResponse || {};
    setStatus("loading", "Loading imaging studies…");
    var patientRequest = token.need_patient_banner ? client.patient.read() : Promise.resolve(null);
    var search = client.request(
      "ImagingStudy?patient=" + encodeURIComponent(patientId) + "&_include=ImagingStudy:endpoint",
      { pageLimit: 0 }
    );
    var results = await Promise.all([patientRequest, search]);
    if (results[0]) renderBanner(results[0]);
    var bundles = [].concat(results[1]);
    var studies = [], endpoints = {};
    bundles.forEach(function (bundle) {
      (bundle.entry || []).forEach(function (entry) {
        var r = entry.resource || {};
        if (r.resourceType === "ImagingStudy") studies.push(r);
        else if (r.resourceType === "Endpoint") endpoints[r.id] = r;
      });
    });
    renderStudies(studies, endpoints);
    var user = client.getFhirUser();
    if (user) {
      var signedIn = document.getElementById("signed-in");
      signedIn.textContent = "Signed in as " + user + ".";
      signedIn.hidden = false;
    }
    var notes = problems(bundles);
    setStatus("ready", studies.length
      ? "Showing " + studies.length + (studies.length === 1 ? " study." : " studies.") +
        (notes.length ? " Note: " + notes.join(" ") : "")
      : "No imaging studies were found for this patient." + (notes.length ? " " + notes.join(" ") : ""));
  }

  // RFC 9207: the authorization response names its issuer. It must be the server this app asked (a
  // mix-up otherwise); once checked it leaves the address bar, as client-js takes out code and state.
  function checkIssuer(iss, serverUrl) {
    if (!iss) return;
    var trimmed = function (url) { return String(url || "").replace(/\/+$/, ""); };
    if (trimmed(iss) !== trimmed(serverUrl)) {
      throw new Error("The authorization response came from another server than the one asked (iss).");
    }
    var url = new URL(window.location.href);
    url.searchParams.delete("iss");
    window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
  }

  async function main() {
    if (typeof FHIR === "undefined") throw new Error("The SMART client library did not load.");
    var params = new URLSearchParams(window.location.search);
    if (params.has("code") || params.has("error")) {
      var client = await FHIR.oauth2.ready();
      checkIssuer(params.get("iss"), client.state.serverUrl);
      return show(client);
    }
    if (params.has("launch")) {
      setStatus("loading", "Signing in for the EHR launch…");
      if (!params.has("iss")) throw new Error("The EHR launch gave no iss (FHIR server address).");
      return authorize({ scope: EHR_SCOPE }); // iss and launch come from the URL
    }
    if (window.sessionStorage.getItem(SMART_KEY)) {
      // A reload after authorization: client-js took code and state out of the address bar.
      try {
        return await show(await FHIR.oauth2.ready());
      } catch (error) {
        console.warn("stored SMART session unusable, starting again", error);
      }
    }
    setStatus("loading", "Signing in…");
    return authorize({ scope: STANDALONE_SCOPE, iss: defaultIss() });
  }

  main().catch(function (error) {
    console.error(error);
    setStatus("error", "Could not open the imaging record: " + (error && error.message ? error.message : error));
  });
})();
