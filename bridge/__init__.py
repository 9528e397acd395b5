"""sms-bridge: an email-to-SMS bridge for KwtSMS and OpenTech."""

__version__ = "0.1.0"
