"""One message's way through an SMTP session: the job (its envelope, payload and the replies it got so far),
the hooks a session calls with it, and how its replies read as a send result."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from emailkit.domain.ports.provider import OutgoingMessage, SendResult, smtp_code_is_transient

Reply = tuple[int, bytes]


class SmtpJob:
    """One message on its way through a session; ``payload`` is the dot-stuffed DATA content."""

    __slots__ = (
        "body_sent",
        "data_reply",
        "done",
        "empty_body",
        "envelope",
        "index",
        "mail_reply",
        "message",
        "message_id",
        "payload",
        "rcpt_reply",
        "tries",
    )

    def __init__(self, index: int, message: OutgoingMessage) -> None:
        self.index = index
        self.message = message
        self.payload: bytes | None = None
        self.envelope = b""
        self.message_id = ""
        self.tries = 0
        self.done = False
        self.reset()

    def reset(self) -> None:
        self.mail_reply: Reply | None = None
        self.rcpt_reply: Reply | None = None
        self.data_reply: Reply | None = None
        self.body_sent = False
        self.empty_body = False


Finish = Callable[[SmtpJob, SendResult], None]
#: Awaited right before a job's body and final "." are written (the provider records the hand-over there).
Admit = Callable[[SmtpJob], Awaitable[None]]


def reply_text(reply: Reply) -> str:
    return f"{reply[0]} {reply[1].decode('utf-8', 'replace')}".strip()


def reply_failure(job: SmtpJob, reply: Reply) -> SendResult:
    return SendResult.failed(
        job.message.delivery_id, reply_text(reply), transient=smtp_code_is_transient(reply[0])
    )


def envelope_failure(job: SmtpJob) -> SendResult:
    """The first reply of MAIL, RCPT, DATA that refused the transaction explains it best."""
    for reply, expected in ((job.mail_reply, 250), (job.rcpt_reply, 250), (job.data_reply, 354)):
        if reply is None:
            break
        if reply[0] != expected and not (expected == 250 and 200 <= reply[0] < 300):
            return reply_failure(job, reply)
    return SendResult.failed(job.message.delivery_id, "the server refused the transaction", transient=True)


def ok_rcpt(job: SmtpJob) -> bool:
    return job.rcpt_reply is not None and 250 <= job.rcpt_reply[0] <= 251


def refused(job: SmtpJob) -> bool:
    """Whether a reply already received refused the job's transaction (so it has its answer)."""
    return (
        (job.mail_reply is not None and job.mail_reply[0] != 250)
        or (job.rcpt_reply is not None and not ok_rcpt(job))
        or (job.data_reply is not None and job.data_reply[0] != 354)
    )
