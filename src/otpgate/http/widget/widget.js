/* otpgate drop-in widget: ask for a phone number, send a code, check it, hand the
 * token to the page that embedded the widget (postMessage) or to a return_url.
 *
 * No framework, no build step. The server writes its configuration (the origins that
 * may receive a token, the code length, the countries the number may be in) into the
 * data-config attribute of the main element, and its Content-Security-Policy forbids any
 * inline script or style.
 */
(function () {
  "use strict";

  var root = document.getElementById("otpgate-widget");
  var config = readConfig(root);
  var allowedOrigins = config.allowedOrigins;
  var otpLength = config.otpLength;
  var countries = config.countries;

  var phoneForm = document.getElementById("phone-step");
  var phoneInput = document.getElementById("phone");
  var countrySelect = document.getElementById("country");
  var countryShown = document.getElementById("country-shown");
  var sendButton = document.getElementById("send");
  var codeForm = document.getElementById("code-step");
  var codeInput = document.getElementById("code");
  var sentTo = document.getElementById("sent-to");
  var verifyButton = document.getElementById("verify");
  var resendButton = document.getElementById("resend");
  var changeButton = document.getElementById("change");
  var statusLine = document.getElementById("status");
  var errorLine = document.getElementById("error");
  var countdownLine = document.getElementById("countdown");

  var E164 = /^\+[1-9][0-9]{1,14}$/;
  var GENERIC = "Something went wrong. Please try again.";
  var UNREACHABLE = "We could not reach the verification service. Check your connection and try again.";

  // One human sentence for each machine code the API can answer; "{wait}" becomes the
  // time left (Retry-After), shown as a live countdown.
  var MESSAGES = {
    invalid_phone_number: "That is not a valid phone number. Please check the country and the number.",
    landline_not_supported: "This is a landline number, which cannot receive text messages. Please use a mobile number.",
    invalid_code: "That code is wrong or has expired. Check it, or ask for a new code.",
    too_many_attempts: "Too many wrong codes were entered. Please ask for a new code.",
    resend_cooldown: "A code was sent to this number a moment ago. Please wait before asking for another one.",
    rate_limited: "Too many requests from your network. Please wait a little before trying again.",
    phone_send_limit: "Too many codes were sent to this number recently. Please wait before asking for another one.",
    ip_phone_limit: "Too many different phone numbers were tried from your network. Please try again later.",
    country_budget: "We are sending too many codes to this country right now. Please try again later.",
    global_budget: "We are sending an unusually large number of codes right now. Please try again later.",
    prefix_blocked: "Codes to this range of phone numbers are paused for a while. Please try again later.",
    range_denied: "Codes cannot be sent to this phone number.",
    country_blocked: "Codes to this country are paused for a while. Please try again later.",
    phone_locked: "Too many failed attempts for this number. Please wait before trying again.",
    country_not_allowed: "We cannot send codes to phone numbers in this country.",
    store_unavailable: "The verification service is temporarily unavailable. Please try again in a moment.",
    sms_number_rejected: "This number cannot receive our text messages. Please check it, or use another number.",
    sms_number_opted_out: "This number has opted out of our text messages, so no code was sent.",
    sms_provider_unavailable: "The text message service is temporarily unavailable. Please try again in a moment.",
    sms_provider_error: "We could not send the text message. Please try again later.",
    // Second factors (the widget does not call their routes yet; kept complete for when it does).
    invalid_identity: "The verification service could not read the request. Please reload the page and try again.",
    factor_not_found: "This authenticator app is no longer set up for your account.",
    factor_already_verified: "This authenticator app is already set up.",
    credentials_unavailable: "The verification service is temporarily unavailable. Please try again in a moment.",
    // The other channels (the widget itself asks for SMS; a page may be served a code of theirs).
    invalid_email: "That is not a valid email address. Please check it and try again.",
    invalid_channel: "The verification service could not read the request. Please reload the page and try again.",
    channel_not_enabled: "This way of sending codes is not available. Please use another.",
    recipient_rejected: "The code could not be delivered to this address or number. Please check it, or use another.",
    provider_unavailable: "The message service is temporarily unavailable. Please try again in a moment.",
    provider_error: "We could not send the code. Please try again later.",
    email_send_limit: "Too many codes were sent to this address recently. Please wait before asking for another one.",
    ip_email_limit: "Too many different email addresses were tried from your network. Please try again later.",
    email_domain_budget: "We are sending too many codes to this email provider right now. Please try again later.",
    shutting_down: "The verification service is restarting. Please try again in a moment.",
    invalid_api_key: "This page is not set up to use the verification service. Please tell the site's owner.",
    invalid_json: "The verification service could not read the request. Please reload the page and try again.",
    invalid_body: "The verification service could not read the request. Please reload the page and try again.",
    unsupported_media_type: "The verification service could not read the request. Please reload the page and try again.",
    payload_too_large: "The verification service could not read the request. Please reload the page and try again.",
    invalid_end_user_ip: "The verification service could not read the request. Please reload the page and try again.",
    invalid_locale: "The verification service could not read the request. Please reload the page and try again.",
    not_found: "This verification page is out of date. Please reload it.",
    verification_not_found: "This code request is no longer known. Please ask for a new code.",
    method_not_allowed: "This verification page is out of date. Please reload it.",
    internal_error: "The verification service ran into a problem. Please try again later."
  };

  var params = new URLSearchParams(window.location.search);
  var purpose = params.get("purpose") || null;
  var handOff = chooseHandOff(params);

  var phoneNumber = null; // as last sent, E.164
  var verificationId = null; // from the request-otp answer, when the service gives one
  var busy = false;
  var countdownTimer = null;
  var countdownButton = null; // the button the countdown keeps disabled
  var smsListener = null; // the WebOTP request's AbortController

  if (handOff.refused) {
    showError(handOff.refused);
    root.classList.add("refused");
    return; // no form at all: nothing this page does can leave it
  }
  phoneForm.hidden = false;
  fillCountries();
  phoneForm.addEventListener("submit", onSend);
  countrySelect.addEventListener("change", showCountry);
  phoneInput.addEventListener("input", onPhoneTyped);
  phoneInput.addEventListener("change", function () { showFormatted(true); });
  codeForm.addEventListener("submit", onVerify);
  resendButton.addEventListener("click", onResend);
  changeButton.addEventListener("click", onChangeNumber);
  if (otpLength) {
    codeInput.maxLength = otpLength;
    codeInput.minLength = otpLength;
    document.getElementById("code-hint").textContent =
      "The " + otpLength + "-digit code from the text message we sent you.";
  }
  var given = params.get("phone");
  if (given) phoneInput.value = given;

  // --- configuration and where the token may go ---------------------------------------

  function readConfig(element) {
    var parsed = {};
    try {
      parsed = JSON.parse(element.getAttribute("data-config") || "{}");
    } catch (ignored) {
      parsed = {};
    }
    return {
      allowedOrigins: Array.isArray(parsed.allowedOrigins) ? parsed.allowedOrigins : [],
      otpLength: typeof parsed.otpLength === "number" ? parsed.otpLength : null,
      // [{region: "GB", callingCode: 44, nationalPrefix: "0"}, ...]: ALLOWED_COUNTRIES, or all.
      countries: Array.isArray(parsed.countries) ? parsed.countries : []
    };
  }

  // The origin of ``text`` when it is an http(s) URL whose origin is allowed, else null.
  function allowedOriginOf(text) {
    var url;
    try {
      url = new URL(text);
    } catch (ignored) {
      return null;
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") return null;
    return allowedOrigins.indexOf(url.origin) >= 0 ? url.origin : null;
  }

  function chooseHandOff(query) {
    var origin = query.get("origin");
    var returnUrl = query.get("return_url");
    if (origin !== null && returnUrl !== null) {
      return { refused: "This page was opened with both origin and return_url. Give one of them." };
    }
    if (origin !== null) {
      var target = window.parent !== window ? window.parent : window.opener;
      var checked = allowedOriginOf(origin);
      if (checked === null || new URL(origin).origin !== origin.replace(/\/$/, "")) {
        return { refused: "The site " + origin + " is not allowed to receive verification results from this page." };
      }
      if (!target) {
        return { refused: "This page must be embedded in the site " + checked + " (or opened by it)." };
      }
      return { kind: "message", origin: checked, target: target };
    }
    if (returnUrl !== null) {
      if (allowedOriginOf(returnUrl) === null) {
        return { refused: "The address " + returnUrl + " is not allowed to receive verification results from this page." };
      }
      return { kind: "redirect", url: returnUrl };
    }
    if (window.parent !== window) {
      return { refused: "This page was embedded without an origin parameter, so it cannot tell the page around it the result." };
    }
    return { kind: "none" };
  }

  // --- the two steps --------------------------------------------------------------------

  function onSend(event) {
    event.preventDefault();
    var number = toE164(phoneInput.value, selectedCountry());
    if (!E164.test(number)) {
      showError(MESSAGES.invalid_phone_number);
      phoneInput.setAttribute("aria-invalid", "true");
      phoneInput.focus();
      return;
    }
    phoneInput.removeAttribute("aria-invalid");
    requestCode(number, sendButton);
  }

  function onResend() {
    if (phoneNumber) requestCode(phoneNumber, resendButton);
  }

  function onChangeNumber() {
    stopSmsListener();
    stopCountdown(true);
    clearMessages();
    verificationId = null;
    codeInput.value = "";
    codeForm.hidden = true;
    phoneForm.hidden = false;
    phoneInput.focus();
  }

  function requestCode(number, button) {
    if (busy) return;
    var body = { phoneNumber: number };
    if (purpose) body.purpose = purpose;
    clearMessages();
    call("api/v1/request-otp", body, button).then(function (answer) {
      if (!answer.ok) {
        showFailure(answer, button);
        return;
      }
      phoneNumber = number;
      verificationId = typeof answer.body.verificationId === "string" ? answer.body.verificationId : null;
      var expires = typeof answer.body.expiresIn === "number" ? " It expires in " + formatWait(answer.body.expiresIn) + "." : "";
      sentTo.textContent = "We sent a code to " + number + "." + expires;
      clearMessages();
      phoneForm.hidden = true;
      codeForm.hidden = false;
      codeInput.value = "";
      codeInput.focus();
      listenForSms();
    });
  }

  function onVerify(event) {
    if (event) event.preventDefault();
    if (busy) return;
    var code = codeInput.value.replace(/\D/g, "");
    if (!code || (otpLength && code.length !== otpLength)) {
      showError(otpLength ? "Enter the " + otpLength + "-digit code from the text message." : "Enter the code from the text message.");
      codeInput.setAttribute("aria-invalid", "true");
      codeInput.focus();
      return;
    }
    codeInput.removeAttribute("aria-invalid");
    var body = verificationId ? { verificationId: verificationId, otp: code } : { phoneNumber: phoneNumber, otp: code };
    if (purpose) body.purpose = purpose;
    clearMessages();
    call("api/v1/verify-otp", body, verifyButton).then(function (answer) {
      if (!answer.ok) {
        showFailure(answer, verifyButton);
        if (answer.code === "invalid_code") codeInput.select();
        return;
      }
      var token = answer.body.token;
      if (typeof token !== "string" || !token) {
        showError("The code was accepted, but the verification service sent no token. Please tell the site's owner.");
        return;
      }
      stopSmsListener();
      stopCountdown(true); // whatever it was counting down to no longer matters
      deliver(token);
    });
  }

  function deliver(token) {
    codeForm.hidden = true;
    root.classList.add("verified");
    if (handOff.kind === "message") {
      // Only ever to the one allowed origin it was checked against: the browser drops the
      // message if the page around the widget is anything else.
      handOff.target.postMessage({ type: "otpgate:verified", token: token, phoneNumber: phoneNumber }, handOff.origin);
      showStatus("Your phone number is verified.");
    } else if (handOff.kind === "redirect") {
      if (allowedOriginOf(handOff.url) === null) {
        showError("The return address is not allowed to receive verification results."); // checked at start
        return;
      }
      showStatus("Your phone number is verified. Taking you back…");
      var url = new URL(handOff.url);
      url.hash = "token=" + encodeURIComponent(token);
      window.location.replace(url.href);
    } else {
      showStatus("Your phone number is verified.");
    }
  }

  // --- talking to the API ---------------------------------------------------------------

  // Resolves to {ok, status, body, code, retryAfter}; never rejects.
  function call(path, body, button) {
    busy = true;
    button.disabled = true;
    root.setAttribute("aria-busy", "true");
    return fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store"
    })
      .then(function (response) {
        return response.text().then(function (text) {
          var parsed = null;
          try {
            parsed = JSON.parse(text);
          } catch (ignored) {
            parsed = null;
          }
          var data = parsed && typeof parsed === "object" ? parsed : {};
          return {
            ok: response.ok && parsed !== null,
            status: response.status,
            body: data,
            code: typeof data.code === "string" ? data.code : null,
            retryAfter: retryAfterSeconds(response.headers.get("retry-after"))
          };
        });
      })
      .catch(function () {
        return { ok: false, status: 0, body: {}, code: null, retryAfter: null };
      })
      .then(function (answer) {
        busy = false;
        root.removeAttribute("aria-busy");
        if (countdownTimer === null || countdownButton !== button) button.disabled = false;
        return answer;
      });
  }

  function retryAfterSeconds(header) {
    if (!header) return null;
    if (/^\d+$/.test(header.trim())) return parseInt(header, 10);
    var when = Date.parse(header);
    return isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
  }

  function showFailure(answer, button) {
    var text;
    if (answer.status === 0) text = UNREACHABLE;
    else if (answer.code && Object.prototype.hasOwnProperty.call(MESSAGES, answer.code)) text = MESSAGES[answer.code];
    else text = GENERIC + (answer.status ? " (error " + answer.status + ")" : "");
    showError(text);
    if (answer.retryAfter) startCountdown(button, answer.retryAfter);
  }

  // --- countdown (Retry-After) ----------------------------------------------------------

  function startCountdown(button, seconds) {
    stopCountdown(true);
    var end = Date.now() + seconds * 1000;
    countdownButton = button;
    button.disabled = true;
    countdownLine.hidden = false;
    var tick = function () {
      var leftMs = end - Date.now();
      var left = Math.ceil(leftMs / 1000);
      if (left <= 0) {
        stopCountdown(false);
        showStatus("You can try again now.");
        return;
      }
      countdownLine.textContent = "You can try again in " + formatWait(left) + ".";
      // Wake when the shown number changes.
      countdownTimer = window.setTimeout(tick, Math.max(50, leftMs - (left - 1) * 1000));
    };
    tick();
  }

  function stopCountdown(quiet) {
    if (countdownTimer !== null) window.clearTimeout(countdownTimer);
    countdownTimer = null;
    countdownLine.hidden = true;
    countdownLine.textContent = "";
    if (countdownButton) {
      countdownButton.disabled = false;
      if (!quiet) errorLine.textContent = "";
    }
    countdownButton = null;
  }

  // One wording for every time left: 0:05, 1:00, 59:59, 1:00:00.
  function formatWait(seconds) {
    var hours = Math.floor(seconds / 3600);
    var minutes = Math.floor((seconds % 3600) / 60);
    var rest = seconds % 60;
    return (hours ? hours + ":" + twoDigits(minutes) : String(minutes)) + ":" + twoDigits(rest);
  }

  function twoDigits(n) {
    return (n < 10 ? "0" : "") + n;
  }

  // --- WebOTP: fill in the code from the SMS, where the browser can ---------------------

  function listenForSms() {
    stopSmsListener();
    if (!("OTPCredential" in window) || !navigator.credentials) return;
    var controller = new AbortController();
    smsListener = controller;
    navigator.credentials
      .get({ otp: { transport: ["sms"] }, signal: controller.signal })
      .then(function (credential) {
        if (smsListener !== controller || !credential || !credential.code) return;
        smsListener = null;
        codeInput.value = credential.code;
        onVerify(null);
      })
      .catch(function () {
        // Aborted, refused or not available here: typing the code still works.
      });
  }

  function stopSmsListener() {
    if (smsListener !== null) smsListener.abort();
    smsListener = null;
  }

  // --- the number: a country, and the national number as dialled at home ----------------

  function fillCountries() {
    var names = regionNames();
    var options = countries.map(function (country) {
      var name = (names && names.of(country.region)) || country.region;
      return { country: country, name: name };
    });
    options.sort(function (a, b) { return a.name.localeCompare(b.name); });
    options.forEach(function (entry) {
      var option = document.createElement("option");
      option.value = entry.country.region;
      option.textContent = entry.name + " (+" + entry.country.callingCode + ")";
      countrySelect.appendChild(option);
    });
    var home = browserRegion();
    if (countries.length) countrySelect.value = home !== null ? home : countries[0].region;
    countrySelect.closest(".country").hidden = countries.length === 0;
    showCountry();
  }

  function regionNames() {
    try {
      return new Intl.DisplayNames(navigator.languages || [navigator.language], { type: "region" });
    } catch (ignored) {
      return null; // an older browser: the codes themselves
    }
  }

  // The first of the browser's languages whose region is one of the choices ("en-GB": GB;
  // "fr": FR, its likeliest region), else null.
  function browserRegion() {
    var languages = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language];
    for (var i = 0; i < languages.length; i++) {
      var region = null;
      try {
        region = new Intl.Locale(languages[i]).maximize().region || null;
      } catch (ignored) {
        region = null;
      }
      if (region !== null && countryOf(region) !== null) return region;
    }
    return null;
  }

  function countryOf(region) {
    for (var i = 0; i < countries.length; i++) {
      if (countries[i].region === region) return countries[i];
    }
    return null;
  }

  function selectedCountry() {
    return countryOf(countrySelect.value);
  }

  function showCountry() {
    var country = selectedCountry();
    countryShown.textContent = country ? country.region + " +" + country.callingCode : "";
  }

  // E.164 from what was typed: as it stands when it starts with + (or 00); else the
  // country's calling code and the national number without its trunk prefix (the 0 of
  // 020 in GB, the 1 of 1 212 in the US). The service's parse has the last word.
  function toE164(text, country) {
    var compact = text.replace(/[\s().\-\u00a0]/g, "");
    if (compact.charAt(0) === "+") return compact;
    if (compact.indexOf("00") === 0) return "+" + compact.slice(2);
    if (country === null || !/^[0-9]+$/.test(compact)) return compact;
    var trunk = country.nationalPrefix;
    var national = trunk && compact.indexOf(trunk) === 0 ? compact.slice(trunk.length) : compact;
    return "+" + country.callingCode + national;
  }

  function onPhoneTyped() {
    // Only while typing at the end, so a correction in the middle keeps its caret.
    showFormatted(phoneInput.selectionStart === phoneInput.value.length);
  }

  function showFormatted(atEnd) {
    if (!atEnd) return;
    var text = phoneInput.value;
    if (/^\s*(\+|00)/.test(text) || /[^0-9\s().\-\u00a0]/.test(text)) return; // international, or not a number
    var formatted = groupDigits(text.replace(/\D/g, ""), selectedCountry());
    if (formatted !== text) phoneInput.value = formatted;
  }

  // "0 740 012 3457", "212 555 0123": the trunk prefix apart, then threes, ending in up to four.
  function groupDigits(digits, country) {
    var groups = [];
    var trunk = country && country.nationalPrefix;
    if (trunk && digits.length > trunk.length && digits.indexOf(trunk) === 0) {
      groups.push(trunk);
      digits = digits.slice(trunk.length);
    }
    while (digits.length > 4) {
      groups.push(digits.slice(0, 3));
      digits = digits.slice(3);
    }
    if (digits) groups.push(digits);
    return groups.join(" ");
  }

  // --- small helpers --------------------------------------------------------------------

  function showStatus(text) {
    errorLine.textContent = "";
    statusLine.textContent = text;
  }

  function showError(text) {
    statusLine.textContent = "";
    errorLine.textContent = text;
  }

  function clearMessages() {
    statusLine.textContent = "";
    errorLine.textContent = "";
  }
})();
