/* otpgate operators' dashboard: the blocks in force (each with a lift button, which asks
 * before it lifts), conversion per country as a chart whose every bar says its figures,
 * and a phone lookup, all through /admin/v1/.
 *
 * No framework, no build step, no library: the chart is SVG drawn here. The admin key is
 * pasted once and kept in sessionStorage, so it lives as long as this tab and no other
 * tab or later visit sees it; it travels only in the Authorization header (never in a
 * URL or a cookie, so no other site can make this page act). Everything the service
 * answers is shown as text (textContent), never parsed as markup.
 */
(function () {
  "use strict";

  var KEY_ITEM = "otpgate.adminKey";
  var API = "admin/v1/";
  var REFRESH_MS = 15000;
  var CHART_ROWS = 20;

  var keyForm = document.getElementById("key-form");
  var keyInput = document.getElementById("key");
  var forgetButton = document.getElementById("forget");
  var panels = document.getElementById("panels");
  var statusLine = document.getElementById("status");
  var errorLine = document.getElementById("error");
  var refreshButton = document.getElementById("refresh");
  var blocksTable = document.getElementById("blocks");
  var blocksBody = blocksTable.querySelector("tbody");
  var blocksEmpty = document.getElementById("blocks-empty");
  var chart = document.getElementById("chart");
  var chartEmpty = document.getElementById("chart-empty");
  var phoneForm = document.getElementById("phone-form");
  var phoneInput = document.getElementById("phone");
  var phoneResult = document.getElementById("phone-result");

  var timer = null;
  var confirming = null; // the block whose lift awaits a yes, as "kind scope"

  keyForm.addEventListener("submit", onKey);
  forgetButton.addEventListener("click", forgetKey);
  refreshButton.addEventListener("click", function () { refresh(); });
  phoneForm.addEventListener("submit", onLookup);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && storedKey()) refresh();
  });

  if (storedKey()) {
    showPanels();
    refresh();
  } else {
    askForKey();
  }

  // --- the key ---------------------------------------------------------------------------

  function storedKey() {
    try {
      return window.sessionStorage.getItem(KEY_ITEM);
    } catch (ignored) {
      return null; // storage turned off: the key cannot be kept, so it is asked for
    }
  }

  function onKey(event) {
    event.preventDefault();
    var key = keyInput.value.trim();
    if (!key) {
      showError("Paste an admin key.");
      return;
    }
    try {
      window.sessionStorage.setItem(KEY_ITEM, key);
    } catch (ignored) {
      showError("This browser does not let the page keep the key for the tab.");
      return;
    }
    keyInput.value = "";
    showPanels();
    refresh();
  }

  function forgetKey() {
    try {
      window.sessionStorage.removeItem(KEY_ITEM);
    } catch (ignored) {
      // nothing was kept
    }
    askForKey();
  }

  function askForKey(message) {
    stopTimer();
    panels.hidden = true;
    forgetButton.hidden = true;
    keyForm.hidden = false;
    setStatus("");
    showError(message || "");
    keyInput.focus();
  }

  function showPanels() {
    keyForm.hidden = true;
    panels.hidden = false;
    forgetButton.hidden = false;
    showError("");
  }

  // --- calls -----------------------------------------------------------------------------

  // Resolves to {ok, status, body}; a refused key sends the page back to the key form.
  function call(method, path) {
    var key = storedKey();
    if (!key) {
      askForKey();
      return Promise.resolve({ ok: false, status: 401, body: null });
    }
    return window.fetch(API + path, {
      method: method,
      headers: { Authorization: "Bearer " + key, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit"
    }).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (body) {
        if (response.status === 401) {
          forgetKeyQuietly();
          askForKey("That key was refused. Paste one of ADMIN_API_KEYS.");
        }
        return { ok: response.ok, status: response.status, body: body };
      });
    }, function () {
      return { ok: false, status: 0, body: null };
    });
  }

  function forgetKeyQuietly() {
    try {
      window.sessionStorage.removeItem(KEY_ITEM);
    } catch (ignored) {
      // nothing was kept
    }
  }

  function failure(answer, what) {
    if (answer.status === 401) return;
    if (answer.status === 0) {
      showError("The service did not answer " + what + ". Check the connection.");
    } else if (answer.body && typeof answer.body.message === "string") {
      showError(answer.body.message + " (" + answer.body.code + ")");
    } else {
      showError("The service answered " + what + " with status " + answer.status + ".");
    }
  }

  function refresh() {
    stopTimer();
    return Promise.all([loadBlocks(), loadStats()]).then(function () {
      if (!panels.hidden) timer = window.setTimeout(refresh, REFRESH_MS);
    });
  }

  function stopTimer() {
    if (timer !== null) window.clearTimeout(timer);
    timer = null;
  }

  // --- blocks ----------------------------------------------------------------------------

  function loadBlocks() {
    return call("GET", "blocks").then(function (answer) {
      if (!answer.ok) {
        failure(answer, "the list of blocks");
        return;
      }
      drawBlocks(answer.body.blocks || []);
    });
  }

  function drawBlocks(blocks) {
    blocksBody.textContent = "";
    blocksEmpty.hidden = blocks.length > 0;
    blocksTable.hidden = blocks.length === 0;
    blocks.forEach(function (block) {
      var row = document.createElement("tr");
      row.setAttribute("data-kind", block.kind);
      row.setAttribute("data-scope", block.scope);
      [
        block.kind,
        block.scope,
        block.reason,
        describeCounts(block.counts),
        formatTime(block.startedAt),
        formatTime(block.endsAt)
      ].forEach(function (text) {
        var cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      });
      var action = document.createElement("td");
      action.className = "action";
      row.appendChild(action);
      blocksBody.appendChild(row);
      if (confirming === blockKey(block)) askToLift(block, action);
      else offerLift(block, action, false);
    });
  }

  function blockKey(block) {
    return block.kind + " " + block.scope;
  }

  function button(text, label, className, onClick) {
    var element = document.createElement("button");
    element.type = "button";
    element.textContent = text;
    element.setAttribute("aria-label", label);
    if (className) element.className = className;
    element.addEventListener("click", onClick);
    return element;
  }

  // The Lift button; a click asks first, in the row itself.
  function offerLift(block, cell, focus) {
    var what = block.kind + " on " + block.scope;
    var lift = button("Lift", "Lift " + what, "", function () {
      confirming = blockKey(block);
      askToLift(block, cell);
    });
    cell.textContent = "";
    cell.appendChild(lift);
    if (focus) lift.focus();
  }

  function askToLift(block, cell) {
    var what = block.kind + " on " + block.scope;
    var question = document.createElement("span");
    question.className = "question";
    question.textContent = "Lift?";
    var yes = button("Yes", "Yes, lift " + what, "", function () { liftBlock(block, yes, no); });
    var no = button("Cancel", "Cancel, keep " + what, "secondary", function () {
      confirming = null;
      offerLift(block, cell, true);
    });
    cell.textContent = "";
    cell.appendChild(question);
    cell.appendChild(yes);
    cell.appendChild(no);
    no.focus(); // the safe answer is the one Enter gives
  }

  function describeCounts(counts) {
    return Object.keys(counts || {}).map(function (name) {
      return name + " " + counts[name];
    }).join(", ");
  }

  function liftBlock(block, yes, no) {
    yes.disabled = true;
    no.disabled = true;
    var path = "blocks/" + encodeURIComponent(block.kind) + "/" + encodeURIComponent(block.scope);
    call("DELETE", path).then(function (answer) {
      confirming = null;
      if (answer.ok) {
        showError("");
        setStatus("Lifted " + block.kind + " on " + block.scope + ".");
      } else if (answer.status === 404) {
        setStatus("That block had already ended.");
      } else {
        failure(answer, "the lift");
      }
      loadBlocks();
    });
  }

  // --- conversion per country: a bar chart in SVG ----------------------------------------

  function loadStats() {
    return call("GET", "stats").then(function (answer) {
      if (!answer.ok) {
        failure(answer, "the conversion figures");
        return;
      }
      var countries = (answer.body.ranges || []).filter(function (r) { return r.kind === "country"; });
      countries.sort(function (a, b) { return b.day.sends - a.day.sends || (a.scope < b.scope ? -1 : 1); });
      drawChart(countries.slice(0, CHART_ROWS));
    });
  }

  var SVG = "http://www.w3.org/2000/svg";
  var LABEL_W = 80;
  var BAR_W = 360;
  var BAR_H = 15;
  var ROW_H = 40;
  var TOP = 28;
  var FIGURES_W = 120; // room a bar's figures take, "100% · 10000 of 10000" at 12px

  function svg(name, attributes, text) {
    var element = document.createElementNS(SVG, name);
    Object.keys(attributes).forEach(function (attribute) {
      element.setAttribute(attribute, String(attributes[attribute]));
    });
    if (text !== undefined) element.textContent = text;
    return element;
  }

  function drawChart(countries) {
    chart.textContent = "";
    chartEmpty.hidden = countries.length > 0;
    if (countries.length === 0) return;
    var width = LABEL_W + BAR_W + 16;
    var height = TOP + countries.length * ROW_H + 8;
    var root = svg("svg", {
      viewBox: "0 0 " + width + " " + height,
      width: width,
      height: height,
      role: "img",
      "aria-labelledby": "chart-title"
    });
    root.appendChild(svg("rect", { x: LABEL_W, y: 6, width: 12, height: 10, "class": "hour" }));
    root.appendChild(svg("text", { x: LABEL_W + 16, y: 15, "class": "legend-text" }, "last hour"));
    root.appendChild(svg("rect", { x: LABEL_W + 100, y: 6, width: 12, height: 10, "class": "day" }));
    root.appendChild(svg("text", { x: LABEL_W + 116, y: 15, "class": "legend-text" }, "last day"));
    countries.forEach(function (range, index) {
      var y = TOP + index * ROW_H;
      var country = range.scope.replace(/^country:/, "");
      var row = svg("g", { "class": "country", "data-scope": range.scope });
      row.appendChild(svg("title", {}, country + ": " + describeRate(range.hour) + " in the last hour, " +
        describeRate(range.day) + " in the last day"));
      row.appendChild(svg("text", { x: 0, y: y + 21 }, country));
      bar(row, "hour", y + 2, range.hour);
      bar(row, "day", y + 2 + BAR_H + 2, range.day);
      root.appendChild(row);
    });
    root.appendChild(svg("line", { x1: LABEL_W, y1: TOP - 4, x2: LABEL_W, y2: height - 4, "class": "axis" }));
    chart.appendChild(root);
  }

  // A bar and its figures, written on it: past the filled part while there is room (so a
  // 0% bar reads "0% · 0 of 120"), else inside its end.
  function bar(row, period, y, figures) {
    row.appendChild(svg("rect", { x: LABEL_W, y: y, width: BAR_W, height: BAR_H, "class": "track" }));
    var rate = figures.conversion === null ? 0 : Math.max(0, Math.min(1, figures.conversion));
    var filled = Math.round(rate * BAR_W);
    row.appendChild(svg("rect", { x: LABEL_W, y: y, width: filled, height: BAR_H, "class": period }));
    var outside = filled + FIGURES_W <= BAR_W;
    row.appendChild(svg("text", {
      x: LABEL_W + (outside ? filled + 6 : filled - 6),
      y: y + BAR_H - 3,
      "text-anchor": outside ? "start" : "end",
      "class": outside ? "figures" : "figures on-bar",
      "data-period": period
    }, describeRate(figures)));
  }

  function describeRate(figures) {
    var counts = figures.approvals + " of " + figures.sends;
    if (figures.conversion === null) return "no sends · " + counts;
    return Math.round(figures.conversion * 100) + "% · " + counts;
  }

  // --- one phone -------------------------------------------------------------------------

  function onLookup(event) {
    event.preventDefault();
    var number = phoneInput.value.replace(/[\s().-]/g, "");
    if (!number) return;
    call("GET", "phones/" + encodeURIComponent(number)).then(function (answer) {
      if (!answer.ok) {
        phoneResult.hidden = true;
        failure(answer, "the lookup");
        return;
      }
      showError("");
      drawPhone(answer.body);
    });
  }

  function drawPhone(phone) {
    phoneResult.textContent = "";
    var code = phone.codePending
      ? "pending, expires " + formatTime(phone.codeExpiresAt) + "; " + phone.attempts + " of " +
        phone.maxAttempts + " attempts used"
      : "none pending";
    var verification = phone.verification
      ? phone.verification.id + ", " + phone.verification.status + " (created " +
        formatTime(phone.verification.createdAt) + ", updated " + formatTime(phone.verification.updatedAt) + ")"
      : "none";
    [
      ["Phone number", phone.phoneNumber],
      ["Code", code],
      ["Resend cooldown", phone.cooldownSeconds > 0 ? phone.cooldownSeconds + " s left" : "none"],
      ["Sends in the window", phone.sendsInWindow + " of " + phone.sendLimit + " per " + phone.sendWindowSeconds + " s"],
      ["Consecutive failures", String(phone.consecutiveFailures)],
      ["Locked until", phone.lockedUntil ? formatTime(phone.lockedUntil) : "not locked"],
      ["Verification", verification]
    ].forEach(function (pair) {
      var term = document.createElement("dt");
      term.textContent = pair[0];
      var value = document.createElement("dd");
      value.textContent = pair[1];
      phoneResult.appendChild(term);
      phoneResult.appendChild(value);
    });
    phoneResult.hidden = false;
  }

  // --- small things ----------------------------------------------------------------------

  function formatTime(iso) {
    if (!iso) return "";
    return iso.replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function setStatus(text) {
    statusLine.textContent = text;
  }

  function showError(text) {
    errorLine.textContent = text;
  }
})();
