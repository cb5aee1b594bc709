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
 * Beside each study, its imaging reports, from one search per load (every page):
 *   GET DiagnosticReport?patient=<id>   (matched to the studies by DiagnosticReport.imagingStudy)
 * the report's status and conclusion in clinical words, and its PDF (presentedForm application/pdf, a
 * token-protected gateway route) fetched with the access token and opened as a blob URL. Without the
 * scope, or when the search fails, the studies are still listed and the reports said to be unavailable.
 *
 * The patient is read in every launch (GET Patient/<id>): the banner shows it when the token says
 * need_patient_banner (a standalone launch), and the image viewer's header always names it. Every fact is
 * formatted by ../shared/format.js (GMFormat), the twin of the server's app/core/display.py.
 *
 * "View images" opens a study through the trust's WADO-RS Endpoint (the facade's gateway, which wants
 * the same access token: SMART Imaging Access): a thumbnail per series (/thumbnail), then the series
 * in the WebGL viewer (./viewer3d.js, Cornerstone3D: WADO-RS frames, the series metadata registered
 * for the loader) or, without WebGL, as server-rendered images one at a time (/rendered). Images are
 * fetched with the Authorization header; nothing about them is cached. An EHR launch whose context names
 * a study (fhirContext) opens at that study's images.
 */
(function () {
  "use strict";

  var CLIENT_ID = "imaging-timeline";
  // client-js appends "launch" only when the scope has no "launch" in it at all, so the EHR
  // launch must name it: "launch/patient" would send the user to the picker instead.
  // Only the resources the app reads (least privilege): a server that does not grant the reports'
  // scope still gives the timeline, which then says the reports are unavailable.
  var READ_SCOPES = "patient/Patient.rs patient/ImagingStudy.rs patient/Endpoint.rs patient/DiagnosticReport.rs";
  var EHR_SCOPE = "launch " + READ_SCOPES + " openid fhirUser offline_access";
  var STANDALONE_SCOPE = "launch/patient " + READ_SCOPES + " openid fhirUser offline_access";
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
      pkceMode: "required",
      completeInTarget: true // inside an EPR's frame too, the authorization completes in this frame
    }, params));
  }

  // -- formatting (one format for every page: ../shared/format.js, twin of app/core/display.py) -------
  var F = window.GMFormat;

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

  function plural(n, one, many) { return n + " " + (n === 1 ? one : many); }

  // -- the studies --------------------------------------------------------------------------
  function studyUid(study) {
    var found = (study.identifier || []).filter(function (i) { return i.system === DICOM_UID; })[0];
    return found && found.value ? found.value.replace(/^urn:oid:/, "") : study.id;
  }

  function accessionOf(study) {
    var found = (study.identifier || []).filter(function (i) {
      return i.type && (i.type.coding || []).some(function (c) { return c.code === "ACSN"; });
    })[0];
    return found ? found.value : "";
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

  function conceptText(concept) {
    if (!concept) return "";
    return concept.text || (concept.coding || []).map(function (c) { return c.display || c.code; }).filter(Boolean).join(", ");
  }

  function description(study) {
    if (study.description) return study.description;
    return conceptText((study.procedureCode || [])[0]);
  }

  function seriesCount(study) {
    return study.numberOfSeries != null ? study.numberOfSeries : (study.series || []).length;
  }

  function imageCount(study) {
    if (study.numberOfInstances != null) return study.numberOfInstances;
    var counts = (study.series || []).map(function (s) { return s.numberOfInstances; });
    return counts.length && counts.every(function (n) { return n != null; })
      ? counts.reduce(function (a, b) { return a + b; }, 0) : null;
  }

  function details(study) {
    var reasons = (study.reasonCode || []).map(conceptText).filter(Boolean);
    var referrer = study.referrer && (study.referrer.display || study.referrer.reference);
    var sites = (study.location ? [study.location] : []).map(function (l) { return l.display || l.reference; }).filter(Boolean);
    return [
      ["Reason", reasons.join("; ")],
      ["Referrer", referrer || ""],
      ["Site", sites.join(", ")],
      ["Body part", bodyParts(study).join(", ")],
      ["Series", String(seriesCount(study))]
    ];
  }

  // -- the reports (DiagnosticReport, one search per load) ----------------------------------------
  var REPORT_STATUS = {
    "final": "Final report",
    "amended": "Amended report",
    "corrected": "Corrected report",
    "appended": "Final report, with an addendum",
    "preliminary": "Preliminary report: not yet verified",
    "partial": "Preliminary report: not yet verified",
    "registered": "Report not yet written",
    "cancelled": "Report cancelled",
    "entered-in-error": "Report withdrawn (entered in error)"
  };
  var reports = { byStudy: null, client: null, objectUrls: [] };

  // Whether the granted scopes let this app read DiagnosticReport (SMART v2 .rs / v1 .read forms).
  function canReadReports(scope) {
    return String(scope || "").split(/\s+/).some(function (s) {
      var m = /^(patient|user)\/(\*|DiagnosticReport)\.([a-z*]+)(\?.*)?$/.exec(s);
      return !!m && (m[3] === "*" || m[3] === "read" || (/^c?r?u?d?s?$/.test(m[3]) && m[3].indexOf("r") >= 0));
    });
  }

  function reportsByStudy(bundles) {
    var out = Object.create(null);
    bundles.forEach(function (bundle) {
      (bundle.entry || []).forEach(function (entry) {
        var r = entry.resource || {};
        if (r.resourceType !== "DiagnosticReport") return;
        (r.imagingStudy || []).forEach(function (ref) {
          var id = String(ref.reference || "").replace(/^.*ImagingStudy\//, "");
          if (!id) return;
          (out[id] = out[id] || []).push(r);
        });
      });
    });
    return out;
  }

  function pdfOf(report) {
    return (report.presentedForm || []).filter(function (a) {
      return a.contentType === "application/pdf" && a.url;
    })[0] || null;
  }

  // The bearer token goes only to the FHIR server's own origin (the gateway is served beside it).
  function sameOriginAsServer(url) {
    try {
      return new URL(url, window.location.href).origin === new URL(reports.client.state.serverUrl).origin;
    } catch (error) {
      return false;
    }
  }

  async function openPdf(attachment, button, note) {
    // The window opens now, while the click still counts as the user's; the PDF follows into it.
    if (button.getAttribute("aria-busy") === "true") return; // a second press while the first fetches
    var win = window.open("", "_blank");
    note.textContent = "Opening the report…";
    button.setAttribute("aria-busy", "true"); // not disabled: the button keeps the keyboard focus
    try {
      if (!sameOriginAsServer(attachment.url)) throw new Error("the report is held outside this service");
      var response = await fetch(new URL(attachment.url, window.location.href).href, {
        headers: { Authorization: reports.client.getAuthorizationHeader(), Accept: "application/pdf" }
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
      var blob = await response.blob();
      var objectUrl = URL.createObjectURL(blob.type === "application/pdf" ? blob : new Blob([blob], { type: "application/pdf" }));
      reports.objectUrls.push(objectUrl);
      document.getElementById("studies").dataset.lastPdf = objectUrl;
      if (win) {
        win.opener = null;
        win.location.href = objectUrl;
        note.textContent = "The report opened in a new tab.";
      } else {
        // The browser blocked the new tab: a link to the PDF already fetched.
        note.textContent = "";
        note.appendChild(el("a", { href: objectUrl, target: "_blank", rel: "noopener", text: "Open the downloaded report" }));
      }
    } catch (error) {
      if (win) win.close();
      note.textContent = "The report could not be opened (" + (error && error.message ? error.message : error) + ").";
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  function reportBlock(report, label) {
    var status = REPORT_STATUS[report.status] || ("Report status: " + (report.status || F.NOT_RECORDED));
    var children = [el("p", { className: "report-status", "data-status": report.status || "", text: status })];
    if (report.conclusion) children.push(el("p", { className: "report-conclusion", text: report.conclusion }));
    var pdf = pdfOf(report);
    if (pdf) {
      var note = el("span", { className: "report-note", role: "status" });
      var button = el("button", { type: "button", className: "button-secondary open-pdf", text: "Open report (PDF)" });
      // The visible words first (WCAG 2.5.3), then which report: the study and its status.
      button.setAttribute("aria-label", "Open report (PDF) of " + label + ", " + status.replace(/:.*$/, "").toLowerCase() + ", in a new tab");
      button.addEventListener("click", function () { openPdf(pdf, button, note); });
      children.push(el("p", { className: "report-actions" }, [button, note]));
    } else if (!report.conclusion) {
      children.push(muted("No conclusion recorded: see the full report in the trust's system."));
    }
    return el("div", { className: "report", "data-report-id": report.id || "" }, children);
  }

  function reportCell(study, label) {
    if (!reports.byStudy) return [muted("Report unavailable")];
    var found = (reports.byStudy[study.id] || []).concat(study.id !== studyUid(study) ? reports.byStudy[studyUid(study)] || [] : []);
    if (!found.length) return [muted("No report")];
    // Newest first: an amended report above the one it replaces.
    found.sort(function (a, b) { return String(b.issued || "").localeCompare(String(a.issued || "")); });
    return found.map(function (r) { return reportBlock(r, label); });
  }

  function cell(label, children, className) {
    var td = el("td", { "data-label": label }, children);
    if (className) td.className = className;
    return td;
  }

  function toggleDetails(button, row) {
    var open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", open ? "true" : "false");
    button.textContent = open ? "Hide details" : "Details";
    row.hidden = !open;
  }

  function renderStudies(studies, endpoints) {
    var table = document.getElementById("studies");
    var body = table.tBodies[0];
    body.textContent = "";
    studies.sort(function (a, b) { return String(b.started || "").localeCompare(String(a.started || "")); });
    studies.forEach(function (study, index) {
      var mods = modalities(study).map(function (c, i) {
        var abbr = el("abbr", { className: "modality-code", title: c.display || c.code, text: c.code });
        return i ? [document.createTextNode(", "), abbr] : [abbr];
      }).reduce(function (all, part) { return all.concat(part); }, []);
      var trusts = trustNames(study, endpoints);
      var text = description(study);
      var accession = accessionOf(study);
      var images = imageCount(study);
      var detailsId = "study-details-" + index;
      var uid = studyUid(study);
      var detailsRow = el("tr", { id: detailsId, className: "details-row", "data-details-for": uid }, [
        el("td", { colspan: "8" }, [el("dl", { className: "study-details" }, details(study).map(function (pair) {
          return el("div", {}, [el("dt", { text: pair[0] }), el("dd", {}, [pair[1] ? document.createTextNode(pair[1]) : muted("Not recorded")])]);
        }))])
      ]);
      detailsRow.hidden = true;
      var detailsButton = el("button", { type: "button", className: "button-secondary details-toggle",
        "aria-expanded": "false", "aria-controls": detailsId, text: "Details" });
      detailsButton.setAttribute("aria-label", "Details of " + (text || "this study") + ", " + F.formatDate(study.started));
      detailsButton.addEventListener("click", function () {
        toggleDetails(detailsButton, detailsRow);
        detailsButton.setAttribute("aria-label", (detailsRow.hidden ? "Details of " : "Hide details of ") +
          (text || "this study") + ", " + F.formatDate(study.started));
      });
      body.appendChild(el("tr", { "data-study-uid": uid, className: "study-row" }, [
        cell("Date", study.started
          ? [el("time", { datetime: study.started, text: F.formatDateTime(study.started) })]
          : [muted(F.NOT_RECORDED)], "date"),
        cell("Modality", mods.length ? mods : [muted("Unknown")]),
        cell("Description", [text ? document.createTextNode(text) : muted("No description")]),
        cell("Trust", trusts.length
          ? trusts.map(function (t) { return el("span", { className: "trust-name", text: t }); })
          : [muted("Unknown")], "trust"),
        cell("Accession", [accession ? document.createTextNode(accession) : muted(F.NOT_RECORDED)], "accession"),
        cell("Images", [document.createTextNode(images != null ? String(images) : "?")], "num images"),
        cell("Report", reportCell(study, (text || "this study") + ", " + F.formatDate(study.started)), "report-cell"),
        cell("Actions", [el("span", { className: "actions" }, [detailsButton, imagesButton(study, endpoints)])])
      ]));
      body.appendChild(detailsRow);
    });
    var trustCount = unique([].concat.apply([], studies.map(function (s) { return trustNames(s, endpoints); }))).length;
    document.getElementById("studies-caption").textContent =
      plural(studies.length, "study", "studies") + " from " + plural(trustCount, "trust", "trusts");
    table.hidden = false;
  }

  // -- warnings, in the words a clinician reads -----------------------------------------------
  function trustOf(diagnostics) {
    var m = /^(.+?) \([A-Z0-9]{3,5}\):/.exec(diagnostics || "");
    return m ? m[1] : null;
  }

  function clinicalWarning(issue) {
    var text = issue.diagnostics || (issue.details && issue.details.text) || issue.code || "";
    var m;
    if (issue.code === "incomplete") {
      var trust = trustOf(text);
      return {
        title: "Some studies may be missing",
        text: (trust ? trust + "'s" : "One trust's") + " imaging archive did not answer. Studies held there may not be listed: check again later before relying on this list."
      };
    }
    if ((m = /the (birth date|sex) recorded differs between archives \((.*)\)/.exec(text))) {
      var what = m[1] === "birth date" ? "date of birth" : "sex";
      return {
        title: "Patient details differ between trusts",
        text: "The " + what + " recorded for this patient is not the same at every trust (" + m[2].replace(/;/g, " ·") +
          "). Check the patient's identity before relying on these images."
      };
    }
    if ((m = /held by (.+) under different patient identities/.exec(text))) {
      return {
        title: "A study is withheld",
        text: "A study held by " + m[1] + " is recorded against different patients there. It is not shown until the trusts correct it."
      };
    }
    return { title: "Warning", text: text };
  }

  function problems(bundles) {
    var out = [];
    var seen = Object.create(null);
    bundles.forEach(function (bundle) {
      (bundle.entry || []).forEach(function (entry) {
        var r = entry.resource || {};
        if (r.resourceType !== "OperationOutcome") return;
        (r.issue || []).forEach(function (issue) {
          if (issue.severity !== "error" && issue.severity !== "fatal" && issue.severity !== "warning") return;
          var key = issue.code + "|" + issue.diagnostics;
          if (seen[key]) return;
          seen[key] = true;
          out.push(issue);
        });
      });
    });
    return out;
  }

  function reportWarnings(state) {
    if (state === "no-scope") {
      return [{ title: "Reports are not shown", text: "This sign-in does not allow reports to be read. The studies are listed; read their reports in the trust's own system." }];
    }
    if (state === "failed") {
      return [{ title: "Reports are unavailable", text: "The imaging reports could not be loaded just now. The studies are listed; check their reports again later or in the trust's own system." }];
    }
    if (state === "incomplete") {
      return [{ title: "Some reports may be missing", text: "Not every trust's reports could be read. A study shown without a report may still have one: check again later." }];
    }
    return [];
  }

  function renderWarnings(issues, extra) {
    var box = document.getElementById("warnings");
    box.textContent = "";
    issues.map(clinicalWarning).concat(extra || []).forEach(function (w) {
      box.appendChild(el("div", { className: "callout-warning", role: "note" }, [
        el("h2", { className: "callout-title" }, [el("span", { className: "visually-hidden", text: "Important: " }), document.createTextNode(w.title)]),
        el("p", { text: w.text })
      ]));
    });
  }

  // -- images (WADO-RS through the trust's Endpoint) -----------------------------------------------
  var WADO_RS = "dicom-wado-rs";
  var IID = "ihe-iid";
  var viewer = { client: null, objectUrls: [], generation: 0, frames: [], imageIds: [], index: 0, gpu: null, cine: null };
  var current = { patient: null };

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
    if (!endpointOf(study.endpoint, endpoints, WADO_RS)) return muted("Images not available");
    var button = el("button", { type: "button", className: "button view-images", text: "View images" });
    button.setAttribute("aria-label", "View images of " + (description(study) || "this study") + ", " + F.formatDate(study.started));
    button.addEventListener("click", function () { openViewer(study, endpoints, button); });
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

  function patientFacts() {
    var p = current.patient;
    if (!p) return { name: "Not known", nhs: "", born: "" };
    var nhs = (p.identifier || []).filter(function (i) { return i.system === NHS_NUMBER; })[0];
    return {
      name: F.formatName((p.name || [])[0]) || "Name not recorded",
      nhs: F.formatNhsNumber(nhs ? nhs.value : p.id),
      born: F.formatDate(p.birthDate)
    };
  }

  function fillViewerFacts(study, endpoints) {
    var facts = patientFacts();
    document.getElementById("vf-name").textContent = facts.name;
    document.getElementById("vf-nhs").textContent = facts.nhs;
    document.getElementById("vf-born").textContent = facts.born;
    document.getElementById("vf-date").textContent = F.formatDateTime(study.started);
    document.getElementById("vf-trust").textContent = trustNames(study, endpoints).join(", ") || "Unknown";
    document.getElementById("vf-accession").textContent = accessionOf(study) || F.NOT_RECORDED;
  }

  // The WebGL viewer (Cornerstone3D, ./viewer3d.js), loaded on first use; null when this browser has
  // no WebGL or the library cannot start: the server-rendered images are shown instead.
  var gpuLoading = null;
  function webglAvailable() {
    try {
      var canvas = document.createElement("canvas");
      return !!(canvas.getContext("webgl2") || canvas.getContext("webgl"));
    } catch (e) {
      return false;
    }
  }

  function loadGpuViewer() {
    if (!gpuLoading) {
      gpuLoading = (async function () {
        if (!webglAvailable() || new URLSearchParams(window.location.search).has("server-render")) return null;
        try {
          var module = await import("./viewer3d.js");
          return await module.createViewer(document.getElementById("viewport"), {
            authorization: function () { return viewer.client.getAuthorizationHeader(); },
            vendor: new URL("../vendor/cornerstone/", window.location.href).href,
            onImage: function (index) {
              viewer.index = index;
              updateFrameControls();
              var section = document.getElementById("viewer");
              section.dataset.renderedIndex = String(index);
              viewerState("ready", "Showing image " + (index + 1) + " of " + viewer.imageIds.length + ".");
            },
            onError: function (message) { viewerState("error", message); },
            onLoadFailed: function (imageId) {
              // This series cannot be drawn here (a frame the gateway will not send as it is stored, or
              // one the decoder cannot read): the server-rendered images of the same series instead.
              if (viewer.imageIds.indexOf(imageId) < 0 || document.getElementById("viewer").dataset.renderer !== "webgl") return;
              console.warn("WebGL viewer could not load " + imageId + "; server-rendered images instead");
              setRenderer(null);
              showFrame(viewer.generation);
            }
          });
        } catch (error) {
          console.warn("WebGL viewer unavailable, showing server-rendered images", error);
          return null;
        }
      })();
    }
    return gpuLoading;
  }

  function setRenderer(gpu) {
    var section = document.getElementById("viewer");
    section.dataset.renderer = gpu ? "webgl" : "server";
    document.getElementById("viewport").hidden = !gpu;
    document.getElementById("fallback-frame").hidden = !!gpu;
    Array.prototype.forEach.call(document.querySelectorAll(".gpu-only"), function (node) { node.hidden = !gpu; });
  }

  async function openViewer(study, endpoints, opener) {
    var generation = ++viewer.generation;
    stopCine();
    releaseImages();
    viewer.opener = opener;
    var section = document.getElementById("viewer");
    document.getElementById("timeline").hidden = true;
    section.hidden = false;
    document.getElementById("viewer-title").textContent = (description(study) || "Study") + ", " + F.formatDate(study.started);
    fillViewerFacts(study, endpoints);
    document.getElementById("thumbnails").textContent = "";
    document.getElementById("frame-image").removeAttribute("src");
    viewer.frames = [];
    viewer.imageIds = [];
    updateFrameControls();
    viewerState("loading", "Loading series…");
    section.focus();
    window.scrollTo(0, 0);
    var iid = endpointOf(study.endpoint, endpoints, IID);
    var iidBox = document.getElementById("viewer-iid");
    iidBox.hidden = !iid;
    if (iid) {
      document.getElementById("viewer-iid-link").href = fillTemplate(iid.address, {
        studyUID: studyUid(study), accessionNumber: accessionOf(study),
        patientID: String((study.subject && study.subject.reference) || "").replace(/^Patient\//, "")
      });
    }
    viewer.gpu = await loadGpuViewer();
    if (generation !== viewer.generation) return;
    setRenderer(viewer.gpu);
    var uid = studyUid(study);
    var list = document.getElementById("thumbnails");
    var series = (study.series || []).slice().sort(function (a, b) { return (a.number || 0) - (b.number || 0); });
    var failed = 0;
    var bases = series.map(function (s) {
      var endpoint = endpointOf(s.endpoint, endpoints, WADO_RS) || endpointOf(study.endpoint, endpoints, WADO_RS);
      return endpoint.address + "/studies/" + uid + "/series/" + s.uid;
    });
    var buttons = series.map(function (s, i) {
      var label = (s.modality && s.modality.code ? s.modality.code + " " : "") + (s.description || "Series " + (s.number || ""));
      var count = s.numberOfInstances != null ? plural(s.numberOfInstances, "image", "images") : "";
      var img = el("img", { alt: "" });
      var button = el("button", { type: "button", "aria-pressed": "false", "data-series-uid": s.uid }, [
        img, el("span", { className: "visually-hidden", text: "Series " + (s.number || i + 1) + ": " }),
        el("span", { className: "label", text: label }), el("span", { className: "count", text: count })]);
      button.addEventListener("click", function () { showSeries(bases[i], button, viewer.generation); });
      list.appendChild(el("li", {}, [button]));
      return { button: button, img: img };
    });
    await Promise.all(buttons.map(async function (b, i) {
      try {
        var url = await fetchImage(bases[i] + "/thumbnail");
        if (generation !== viewer.generation) return;
        b.img.src = url;
      } catch (error) {
        failed += 1;
        b.img.alt = "No preview";
      }
    }));
    if (generation !== viewer.generation) return;
    if (buttons.length) await showSeries(bases[0], buttons[0].button, generation);
    if (failed) viewerState("error", failed + " of " + series.length + " series previews could not be loaded.");
  }

  async function showSeries(base, button, generation) {
    stopCine();
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
    if (generation !== viewer.generation) return;
    instances.sort(function (a, b) { return (dicomValue(a, "00200013") || 0) - (dicomValue(b, "00200013") || 0); });
    viewer.frames = [];
    viewer.imageIds = [];
    var metadata = {};
    instances.forEach(function (ds) {
      if (!ds["7FE00010"] && !dicomValue(ds, "00280010")) return; // no pixels (e.g. a structured report)
      var frames = parseInt(dicomValue(ds, "00280008") || "1", 10) || 1;
      var path = base + "/instances/" + dicomValue(ds, "00080018");
      metadata["wadors:" + path + "/frames/1"] = ds;
      for (var n = 1; n <= frames; n++) {
        viewer.frames.push(frames > 1 ? path + "/frames/" + n + "/rendered" : path + "/rendered");
        viewer.imageIds.push("wadors:" + path + "/frames/" + n);
      }
    });
    viewer.index = 0;
    resetPresets(instances.length ? dicomValue(instances[0], "00080060") : "");
    document.getElementById("viewer").dataset.seriesFrames = String(viewer.frames.length);
    updateFrameControls();
    if (!viewer.frames.length) {
      viewerState("ready", "This series has no images to show (it may be a report or other non-image object).");
      document.getElementById("frame-image").removeAttribute("src");
      return;
    }
    setRenderer(viewer.gpu); // each series tries the WebGL viewer again
    if (viewer.gpu) {
      try {
        await viewer.gpu.showStack(viewer.imageIds, metadata);
        return;
      } catch (error) {
        console.warn("WebGL viewer failed on this series; server-rendered images instead", error);
        setRenderer(null);
      }
    }
    await showFrame(generation);
  }

  // A new series opens as stored; the CT presets (Hounsfield units) are offered for CT series only.
  function resetPresets(modality) {
    var select = document.getElementById("wl-preset");
    select.value = "";
    Array.prototype.forEach.call(select.options, function (option) {
      option.disabled = option.value !== "" && modality !== "CT";
    });
    select.disabled = modality !== "CT";
  }

  async function showFrame(generation) {
    var img = document.getElementById("frame-image");
    try {
      var url = await fetchImage(viewer.frames[viewer.index]);
      if (generation !== viewer.generation) return;
      img.src = url;
      img.alt = "Image " + (viewer.index + 1) + " of " + viewer.frames.length;
      document.getElementById("viewer").dataset.renderedIndex = String(viewer.index);
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
    document.getElementById("cine").disabled = count < 2;
    document.getElementById("frame-position").textContent = count ? "Image " + (viewer.index + 1) + " of " + count : "";
  }

  function moveTo(index) {
    if (index < 0 || index >= viewer.frames.length || index === viewer.index) return;
    viewer.index = index;
    updateFrameControls();
    if (viewer.gpu && document.getElementById("viewer").dataset.renderer === "webgl") viewer.gpu.setIndex(index);
    else showFrame(viewer.generation);
  }

  function stopCine() {
    if (viewer.cine) window.clearInterval(viewer.cine);
    viewer.cine = null;
    var button = document.getElementById("cine");
    button.setAttribute("aria-pressed", "false");
    button.textContent = "Play";
  }

  function toggleCine() {
    if (viewer.cine) return stopCine();
    var button = document.getElementById("cine");
    button.setAttribute("aria-pressed", "true");
    button.textContent = "Pause";
    viewer.cine = window.setInterval(function () {
      if (!viewer.frames.length) return stopCine();
      moveTo((viewer.index + 1) % viewer.frames.length);
    }, 100); // 10 images a second
  }

  function closeViewer() {
    viewer.generation += 1;
    stopCine();
    releaseImages();
    document.getElementById("viewer").hidden = true;
    document.getElementById("timeline").hidden = false;
    if (viewer.opener) viewer.opener.focus();
  }

  function wireViewer(client) {
    viewer.client = client;
    document.getElementById("frame-prev").addEventListener("click", function () { moveTo(viewer.index - 1); });
    document.getElementById("frame-next").addEventListener("click", function () { moveTo(viewer.index + 1); });
    document.getElementById("frame-slider").addEventListener("input", function (e) { moveTo(parseInt(e.target.value, 10) - 1); });
    document.getElementById("viewer-close").addEventListener("click", closeViewer);
    document.getElementById("cine").addEventListener("click", toggleCine);
    document.getElementById("wl-preset").addEventListener("change", function (e) {
      if (!viewer.gpu) return;
      var parts = e.target.value.split(",");
      viewer.gpu.setWindow(parts.length === 2 ? { width: +parts[0], center: +parts[1] } : null);
    });
    document.getElementById("zoom-in").addEventListener("click", function () { if (viewer.gpu) viewer.gpu.zoom(1.25); });
    document.getElementById("zoom-out").addEventListener("click", function () { if (viewer.gpu) viewer.gpu.zoom(0.8); });
    document.getElementById("view-reset").addEventListener("click", function () {
      document.getElementById("wl-preset").value = "";
      if (viewer.gpu) viewer.gpu.reset();
    });
    document.getElementById("viewport").addEventListener("keydown", function (e) {
      var handled = true;
      if (e.key === "ArrowDown" || e.key === "ArrowRight" || e.key === "PageDown") moveTo(viewer.index + 1);
      else if (e.key === "ArrowUp" || e.key === "ArrowLeft" || e.key === "PageUp") moveTo(viewer.index - 1);
      else if (e.key === "Home") moveTo(0);
      else if (e.key === "End") moveTo(viewer.frames.length - 1);
      else if (e.key === "+" || e.key === "=") viewer.gpu && viewer.gpu.zoom(1.25);
      else if (e.key === "-") viewer.gpu && viewer.gpu.zoom(0.8);
      else handled = false;
      if (handled) e.preventDefault();
    });
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && !document.getElementById("viewer").hidden) closeViewer();
    });
  }

  function renderBanner(patient) {
    var facts = patientFacts();
    document.getElementById("patient-name").textContent = facts.name;
    document.getElementById("patient-nhs").textContent = facts.nhs;
    document.getElementById("patient-born").textContent = facts.born;
    document.getElementById("patient-gender").textContent = F.formatGender(patient.gender);
    document.getElementById("patient-banner").hidden = false;
  }

  // An EHR launch with a study in its context (fhirContext ImagingStudy/<uid>) opens at that study's images.
  function openLaunchedStudy(token, studies, endpoints) {
    var refs = (token.fhirContext || []).map(function (c) { return c.reference || ""; });
    var uid = refs.filter(function (r) { return /^ImagingStudy\//.test(r); }).map(function (r) { return r.slice(13); })[0];
    var study = uid && studies.filter(function (s) { return s.id === uid || studyUid(s) === uid; })[0];
    if (!study || !endpointOf(study.endpoint, endpoints, WADO_RS)) return;
    var row = document.querySelector('#studies tr[data-study-uid="' + studyUid(study) + '"] button.view-images');
    openViewer(study, endpoints, row);
  }

  function userName(client) {
    // The id_token's `name` (OpenID Connect); the FHIR reference is not a name to show.
    var idToken = client.getIdToken && client.getIdToken();
    return idToken && idToken.name ? idToken.name : null;
  }

  async function show(client) {
    var patientId = client.getPatientId();
    if (!patientId) throw new Error("The launch did not give a patient.");
    wireViewer(client);
    var token = client.state.tokenResponse || {};
    setStatus("loading", "Loading imaging studies…");
    // The patient is read in every launch: the image viewer's header names them. The banner is this
    // app's only when the EHR does not show its own (need_patient_banner).
    var patientRequest = client.patient.read().catch(function (error) {
      console.warn("patient not readable", error);
      return null;
    });
    var search = client.request(
      "ImagingStudy?patient=" + encodeURIComponent(patientId) + "&_include=ImagingStudy:endpoint",
      { pageLimit: 0 }
    );
    // The reports: one search (every page), beside the studies'; its failure leaves the studies shown.
    reports.client = client;
    var reportState = "ok";
    var reportSearch = !canReadReports(token.scope)
      ? Promise.resolve((reportState = "no-scope", null))
      : client.request("DiagnosticReport?patient=" + encodeURIComponent(patientId), { pageLimit: 0 }).catch(function (error) {
        console.warn("reports not readable", error);
        reportState = "failed";
        return null;
      });
    var results = await Promise.all([patientRequest, search, reportSearch]);
    if (results[2]) {
      var reportBundles = [].concat(results[2]);
      reports.byStudy = reportsByStudy(reportBundles);
      if (problems(reportBundles).some(function (i) { return i.severity !== "warning" || i.code === "incomplete"; })) reportState = "incomplete";
    }
    document.getElementById("studies").dataset.reports = reportState;
    current.patient = results[0];
    if (results[0]) {
      document.title = patientFacts().name + " · Imaging timeline";
      if (token.need_patient_banner) renderBanner(results[0]);
    }
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
    var name = userName(client);
    if (name) {
      var signedIn = document.getElementById("signed-in");
      signedIn.textContent = "Signed in as " + name;
      signedIn.hidden = false;
    }
    renderWarnings(problems(bundles), reportWarnings(reportState));
    openLaunchedStudy(token, studies, endpoints);
    setStatus("ready", studies.length
      ? "Showing " + plural(studies.length, "study.", "studies.")
      : "No imaging studies were found for this patient.");
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
