// Drives otpgate's Verify v2 routes with the official Node `twilio` SDK, as a team moving
// off Twilio Verify would: tests/test_twilio_verify_node.py runs it against a running
// `otpgate serve` and asserts on the one JSON line it prints.
//
// Settings come from the environment: OTPGATE_URL, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN,
// VERIFY_SERVICE_SID, PHONE, CODE, WRONG_CODE and SECOND_PHONE (a number whose
// verification is canceled). Exits 0 after printing the JSON line; otherwise prints the
// error on stderr and exits 1.
//
// Pointing the SDK at otpgate (twilio 6.3.1, node_modules/twilio/lib/...):
// - rest/VerifyBase.js:24 builds the Verify domain with
//   `super(twilio, "https://verify.twilio.com")`, and base/Domain.js:16 keeps it as a
//   plain, public `this.baseUrl = baseUrl` property;
// - base/Domain.js:24-27 `absoluteUrl(uri)` reads `this.baseUrl` on every request, and
//   base/Domain.js:49 sends `uri: this.absoluteUrl(opts.uri)` on to the client, so setting
//   `client.verify.baseUrl` moves every Verify call (v2 included: base/Version.js keeps
//   the domain object itself, not a copy of its URL);
// - base/BaseTwilio.js:166 then only rewrites the hostname when an edge or region is set
//   (`getHostname`, base/BaseTwilio.js:191-205; set from opts or TWILIO_EDGE /
//   TWILIO_REGION at lines 51-54), so neither is set here.
import { createRequire } from "node:module";

import twilio from "twilio";

const { RestException } = twilio;
const sdkVersion = createRequire(import.meta.url)("twilio/package.json").version;

function setting(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

async function main() {
  const baseUrl = setting("OTPGATE_URL");
  const accountSid = setting("TWILIO_ACCOUNT_SID");
  const authToken = setting("TWILIO_AUTH_TOKEN");
  const serviceSid = setting("VERIFY_SERVICE_SID");
  const phone = setting("PHONE");
  const code = setting("CODE");
  const wrongCode = setting("WRONG_CODE");
  const secondPhone = setting("SECOND_PHONE");

  const client = twilio(accountSid, authToken);
  client.verify.baseUrl = baseUrl;
  const service = client.verify.v2.services(serviceSid);

  const created = await service.verifications.createWithHttpInfo({ to: phone, channel: "sms" });
  const wrong = await service.verificationChecks.create({ to: phone, code: wrongCode });
  const right = await service.verificationChecks.create({ to: phone, code });
  const fetched = await service.verifications(created.body.sid).fetch();

  const second = await service.verifications.create({ to: secondPhone, channel: "sms" });
  const canceled = await service.verifications(second.sid).update({ status: "canceled" });
  let afterCancel;
  try {
    await service.verificationChecks.create({ to: secondPhone, code });
    afterCancel = { raised: false };
  } catch (error) {
    if (!(error instanceof RestException)) {
      throw error;
    }
    afterCancel = { raised: true, status: error.status, code: error.code };
  }

  const seen = {
    create: {
      httpStatus: created.statusCode,
      sid: created.body.sid,
      status: created.body.status,
      valid: created.body.valid,
      to: created.body.to,
      channel: created.body.channel,
      serviceSid: created.body.serviceSid,
      accountSid: created.body.accountSid,
    },
    wrongCheck: { status: wrong.status, valid: wrong.valid, sid: wrong.sid },
    rightCheck: { status: right.status, valid: right.valid, sid: right.sid },
    fetch: { sid: fetched.sid, status: fetched.status, to: fetched.to },
    cancel: { sid: second.sid, status: canceled.status },
    checkAfterCancel: afterCancel,
    sdkVersion,
  };
  process.stdout.write(`${JSON.stringify(seen)}\n`);
}

main().then(
  () => process.exit(0),
  (error) => {
    const detail = error instanceof RestException
      ? `RestException status=${error.status} code=${error.code}: ${error.message}`
      : (error && error.stack) || String(error);
    process.stderr.write(`${detail}\n`);
    process.exit(1);
  },
);
