"""A small graph-mailer client in Python: what every calling service needs.

Generate the stubs first (test.sh does it):

    python -m grpc_tools.protoc -I ../../proto --python_out=gen --grpc_python_out=gen \
        graphmailer/v1/mailer.proto
"""

import os
import sys
import time

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

from graphmailer.v1 import mailer_pb2, mailer_pb2_grpc  # noqa: E402


class SetupRequired(Exception):
    """FAILED_PRECONDITION: an operator must act (connect the mailbox, add a permission)."""


def stub(address):
    """A Mailer stub on a plaintext channel (use TLS between hosts)."""
    channel = grpc.insecure_channel(address)
    return mailer_pb2_grpc.MailerStub(channel)


def retry_delay(error, default):
    """The server's google.rpc.RetryInfo delay in seconds, if it sent one."""
    status = rpc_status.from_call(error)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return default


def send_mail(mailer, request, attempts=5, timeout=60):
    """Sends with retries on UNAVAILABLE and RESOURCE_EXHAUSTED.

    Give the request an idempotency_key: then a retry after a lost answer cannot send twice.
    FAILED_PRECONDITION is not retried: it needs a person (for example Connect).
    """
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return mailer.SendMail(request, timeout=timeout)
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                raise SetupRequired(error.details()) from error
            retryable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
            if not retryable or attempt == attempts:
                raise
            time.sleep(retry_delay(error, delay))
            delay = min(delay * 2, 30)
    raise AssertionError("unreachable")


def invoice_mail(mailbox, to, pdf_bytes, key):
    """A message with an attachment and an idempotency key."""
    return mailer_pb2.SendMailRequest(
        mailbox=mailbox,
        to=[mailer_pb2.EmailAddress(address=to, name="Customer")],
        cc=[mailer_pb2.EmailAddress(address="accounts@example.org")],
        subject="Your invoice",
        text_body="Your invoice is attached.",
        html_body="<p>Your invoice is attached.</p>",
        attachments=[
            mailer_pb2.Attachment(filename="invoice.pdf", content_type="application/pdf", content=pdf_bytes)
        ],
        headers={"X-Invoice": key},
        idempotency_key=key,
    )


def connect(mailer, mailbox):
    """Starts connecting a mailbox; returns the link its owner must open."""
    try:
        response = mailer.Connect(mailer_pb2.ConnectRequest(mailbox=mailbox))
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
            raise SetupRequired(error.details()) from error
        raise
    return response.authorization_url


def status(mailer, mailbox=""):
    """The service's status: transport and mailboxes."""
    return mailer.Status(mailer_pb2.StatusRequest(mailbox=mailbox))
