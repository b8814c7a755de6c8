"""otpgate: phone verification codes over SMS, with abuse defence built in."""

__version__ = "0.1.0"
