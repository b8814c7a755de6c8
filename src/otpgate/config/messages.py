"""The messages' text: the English SMS, the product name, the templates per channel and
language, and the autofill lines."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from otpgate.config import delivery
from otpgate.config.section import COMMENTED, Section
from otpgate.domain import message


class MessageSettings(Section):
    """What a code's message says. Shipped templates cover SMS, WhatsApp, calls and email
    in en, es, fr, de, pt and hi; TEMPLATES_DIR replaces or adds to them. Start-up warns
    when any language's SMS needs more than one segment."""

    SECTION_TITLE: ClassVar[str] = "Messages"

    sms_message_template: delivery.MessageTemplateText = Field(
        message.DEFAULT_TEMPLATE,
        json_schema_extra=COMMENTED,
        description="The English SMS text, with {code} (required), {app}, {minutes} and"
        " (SMS_SHOW_PURPOSE) {purpose}; when set, it wins over the templates' sms/en.txt."
        " Unset: that file, shipped with this text.",
    )
    sms_show_purpose: bool = Field(
        False,
        description="Let the templates show the request's purpose as {purpose} (it may be an"
        " internal id).",
    )
    sms_app_name: delivery.AppName = Field(
        message.DEFAULT_APP_NAME, description="The product name the templates show as {app}."
    )
    templates_dir: delivery.TemplatesDir = Field(
        None,
        description="A directory of message templates (sms/<lang>.txt, whatsapp/, call/,"
        " email/<lang>.html...) that replace or add to the shipped ones; read and checked at"
        " start-up.",
    )
    sms_webotp_domain: delivery.WebOtpDomain = Field(
        None,
        description="Adds the WebOTP line '@<domain> #<code>' as the SMS's last line, so"
        " browsers autofill the code; unset: no such line.",
    )
    sms_android_app_hash: delivery.AndroidAppHash = Field(
        None,
        description="Adds the Android SMS Retriever line with this 11-character app hash;"
        " unset: no such line.",
    )

    @property
    def english_sms_template(self) -> str | None:
        """SMS_MESSAGE_TEMPLATE when it was set, else None: the templates' English SMS
        (shipped as the same default text, or TEMPLATES_DIR's) is the one sent."""
        if "sms_message_template" in self.model_fields_set:
            return self.sms_message_template
        return None
