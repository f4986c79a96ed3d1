"""Everything to syslog, errors to the on-call mailbox as digests — from a config.

Loopback only: a local syslog daemon on 127.0.0.1:514 (UDP), a local MTA on
127.0.0.1:25. Try it without either with the receiver and any debugging SMTP server::

    python -m aiologsinks receive --syslog 5514 &
    python -m aiosmtpd -n -l 127.0.0.1:8025 &
    SYSLOG_PORT=5514 SMTP_PORT=8025 python examples/syslog_smtp_alerts.py

The SMTP sink is at ERROR level and sends a digest: the first error mails after
``digest_interval`` seconds, together with every error that followed, so an error
storm is one mail, not hundreds. ``flush()``/exit sends what is pending.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from aiologsinks import config

CONFIG: dict[str, Any] = {
    "formatters": {
        "syslog": {"format": "myapp[%(process)d]: %(levelname)s %(name)s %(message)s"},
        "mail": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "sinks": {
        "syslog": {
            "type": "SysLogSink",
            "address": ["127.0.0.1", int(os.environ.get("SYSLOG_PORT", "514"))],
            "facility": "local0",
            "socktype": "udp",
            "formatter": "syslog",
        },
        "alerts": {
            "type": "SMTPSink",
            "level": "ERROR",
            "mailhost": ["127.0.0.1", int(os.environ.get("SMTP_PORT", "25"))],
            "fromaddr": "myapp@localhost",
            "toaddrs": ["oncall@localhost"],
            "subject": "myapp errors",
            "digest_interval": 30.0,
            "digest_max": 500,
            "formatter": "mail",
            # a dead mail server must never back up the syslog lane
            "lane": {"size": 1000, "overflow": "drop_oldest"},
        },
    },
    "loggers": {"root": {"level": "INFO"}},
}

log = logging.getLogger("myapp")


async def main() -> None:
    async with config.install_config(CONFIG) as dispatcher:
        log.info("started")
        for attempt in range(3):
            log.error("payment backend unreachable (attempt %d)", attempt + 1)
        await dispatcher.flush()  # syslog has them; the digest mail is sent
        log.info("done")


if __name__ == "__main__":
    asyncio.run(main())
