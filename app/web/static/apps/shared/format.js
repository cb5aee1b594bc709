/*
 * How a person reads the facts of a patient and a study: the twin of app/core/display.py (the
 * authorization server's pages), so that the patient picker and the apps show the same text.
 * tests/e2e/test_display_formats.py runs both on the same inputs and compares.
 *
 *   dates       NHS style, two-digit day: 23-Dec-1952 (Dec-1952, 1952 for partial dates); a
 *               dateTime with an offset is shown in UK time, 01-Mar-2020 10:15
 *   NHS number  spaced 3-3-4: 943 476 5919
 *   names       FAMILY, Given Other
 *   sex         Female, Male, Other, Unknown; "Not recorded" when absent
 *
 * Browser: the global GMFormat. Node: module.exports.
 */
(function (root) {
  "use strict";

  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  var NOT_RECORDED = "Not recorded";
  var DATE = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$/;
  var DATETIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$/;
  var WORD_START = " -'";
  var GENDERS = { female: "Female", male: "Male", other: "Other", unknown: "Unknown" };
  var ukParts = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Europe/London", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", hourCycle: "h23"
  });

  function formatDate(value) {
    if (!value) return NOT_RECORDED;
    if (DATETIME.test(value)) return formatDateTime(value).split(" ")[0];
    var match = DATE.exec(value);
    if (!match) return value;
    var year = match[1], month = match[2], day = match[3];
    if (month === undefined) return year;
    var m = parseInt(month, 10);
    if (m < 1 || m > 12) return value;
    return day ? day + "-" + MONTHS[m - 1] + "-" + year : MONTHS[m - 1] + "-" + year;
  }

  function formatDateTime(value) {
    if (!value) return NOT_RECORDED;
    var match = DATETIME.exec(value);
    if (!match) return formatDate(value);
    var year = match[1], month = match[2], day = match[3], hour = match[4], minute = match[5];
    if (match[7]) {
      var moment = new Date(value);
      if (isNaN(moment.getTime())) return value;
      var parts = {};
      ukParts.formatToParts(moment).forEach(function (p) { parts[p.type] = p.value; });
      year = parts.year; month = parts.month; day = parts.day; hour = parts.hour; minute = parts.minute;
    }
    return formatDate(year + "-" + month + "-" + day) + " " + hour + ":" + minute;
  }

  function formatNhsNumber(value) {
    var digits = String(value || "").replace(/\s+/g, "");
    return /^\d{10}$/.test(digits) ? digits.slice(0, 3) + " " + digits.slice(3, 6) + " " + digits.slice(6) : digits;
  }

  function capitalised(word) {
    var out = "";
    var previous = " ";
    var lower = word.toLowerCase();
    for (var i = 0; i < lower.length; i++) {
      var c = lower.charAt(i);
      out += WORD_START.indexOf(previous) >= 0 ? c.toUpperCase() : c;
      previous = c;
    }
    return out;
  }

  function formatName(name) {
    if (!name) return "";
    var family = String(name.family || "").trim();
    var given = (name.given || []).map(function (g) { return String(g).trim(); })
      .filter(function (g) { return g; }).map(capitalised).join(" ");
    if (family && given) return family.toUpperCase() + ", " + given;
    if (family || given) return family.toUpperCase() || given;
    return String(name.text || "").trim();
  }

  function formatGender(value) {
    if (!value) return NOT_RECORDED;
    return Object.prototype.hasOwnProperty.call(GENDERS, value) ? GENDERS[value] : value;
  }

  var api = {
    formatDate: formatDate, formatDateTime: formatDateTime, formatNhsNumber: formatNhsNumber,
    formatName: formatName, formatGender: formatGender, NOT_RECORDED: NOT_RECORDED
  };
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.GMFormat = api;
})(typeof self !== "undefined" ? self : this);
