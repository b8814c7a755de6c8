"""SMS delivery: the provider (Amazon SNS, a webhook, or the console), its timeouts
and its retries."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr

from otpgate.config import delivery
from otpgate.config.section import SECRET, Section


class SmsSettings(Section):
    """How an SMS leaves: through Amazon SNS, POSTed as signed JSON to a webhook (which
    also delivers WhatsApp messages and calls), or printed by the console sender in
    development. A provider call that is throttled, fails with a 5xx or is refused is
    retried within a bounded budget."""

    SECTION_TITLE: ClassVar[str] = "SMS"

    sms_provider: Literal["sns", "console", "webhook"] | None = Field(
        None,
        description="sns, webhook or console. Unset: console in development, sns in"
        " production; console prints codes to the log and is refused in production.",
    )
    aws_access_key_id: str | None = Field(
        None,
        json_schema_extra=SECRET,
        description="sns: the access key id, with AWS_SECRET_ACCESS_KEY; unset: the"
        " standard AWS credential chain (environment, shared files, instance role).",
    )
    aws_secret_access_key: SecretStr | None = Field(
        None, description="sns: the secret access key of AWS_ACCESS_KEY_ID."
    )
    aws_session_token: SecretStr | None = Field(
        None, description="sns: the session token of temporary credentials, with both keys."
    )
    aws_region: str = Field(
        "us-east-1",
        validation_alias=AliasChoices("AWS_DEFAULT_REGION", "AWS_REGION"),
        description="sns: the AWS region SMS are published in.",
    )
    sns_endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices("SNS_ENDPOINT_URL", "SNS_ENDPOINT"),
        description="sns: another endpoint for the SNS client, e.g. an emulator"
        " (http://127.0.0.1:5055); unset: the region's.",
    )
    sns_sms_sender_id: delivery.SenderId = Field(
        None,
        description="sns: 1 to 11 letters and digits, at least one letter, shown instead of"
        " a number where carriers allow it.",
    )
    sns_sms_type: Literal["Transactional", "Promotional"] = Field(
        "Transactional",
        description="sns: Transactional (delivery first, as codes need) or Promotional"
        " (cost first).",
    )
    sns_origination_number: delivery.E164Number = Field(
        None,
        description="sns: the E.164 number (long code, toll-free, 10DLC) to send from;"
        " unset: SNS picks.",
    )
    sns_max_price: delivery.MaxPrice = Field(
        None,
        description="sns: the most one SMS may cost, in USD (above 0, at most 1000); SNS"
        " sends no dearer one. Unset: no limit.",
    )
    sns_check_opt_out: bool = Field(
        False,
        description="sns: ask CheckIfPhoneNumberIsOptedOut before each send, and answer 400"
        " sms_number_opted_out to an opted-out number.",
    )
    sms_to_landlines: bool = Field(
        False,
        description="Send SMS and WhatsApp codes to numbers libphonenumber types a fixed"
        " line; false refuses them (400 landline_not_supported, which points to a voice"
        " call when call is enabled). Numbers that may be mobile are always sent.",
    )
    sms_connect_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="Seconds a provider connection may take to open."
    )
    sms_read_timeout_seconds: float = Field(
        5.0, gt=0, le=120, description="Seconds a provider may take to answer a call."
    )
    sms_retry_max_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="Tries per provider call for throttling, 5xx answers and refused"
        " connections (1: no retry).",
    )
    sms_retry_max_seconds: float = Field(
        3.0,
        ge=0,
        le=60,
        description="Seconds after the first try past which no retry starts; the worst case"
        " adds one attempt's timeouts.",
    )
    sms_webhook_url: delivery.WebhookUrl = Field(
        None,
        description="webhook: where each SMS (and WEBHOOK_CHANNELS' messages) is POSTed as"
        " signed JSON; https (or a loopback address) in production, as the payload carries"
        " the code.",
    )
    sms_webhook_secret: delivery.WebhookSecret = Field(
        None,
        description="webhook: the HMAC-SHA256 key of the X-Otpgate-Signature header, 32+"
        " characters; required with SMS_WEBHOOK_URL.",
    )

    @property
    def sms_worst_case_seconds(self) -> float:
        """The longest one send can take: the retry budget plus one attempt's timeouts."""
        return (
            self.sms_retry_max_seconds
            + self.sms_connect_timeout_seconds
            + self.sms_read_timeout_seconds
        )
