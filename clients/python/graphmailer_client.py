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


class NotAllowed(Exception):
    """UNAUTHENTICATED or PERMISSION_DENIED: the key is missing or wrong, or this caller may not
    do this (send as that mailbox, Connect). Retrying cannot help; fix the key or the callers
    file."""


class _CallerKey(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <key>` to every call on a plaintext channel."""

    def __init__(self, key):
        self._metadata = ("authorization", f"Bearer {key}")

    def _with_key(self, details):
        metadata = list(details.metadata or []) + [self._metadata]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_key(details), request)


def stub(address, key=None, root_certificates=None):
    """A Mailer stub presenting the caller key `key` (from the operator's `graph-mailer new-key`).

    With `root_certificates` (PEM bytes of the CA that signed the service's certificate) the
    channel is TLS and the key travels as gRPC call credentials; without, the channel is
    plaintext (only between processes on one host, or inside a mesh that encrypts).
    """
    if root_certificates is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        if key:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(key)
            )
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
        if key:
            channel = grpc.intercept_channel(channel, _CallerKey(key))
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
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise NotAllowed(error.details()) from error
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


def queue_mail(mailer, request, send_at=None):
    """Puts a message in the outbox; returns once it is durably stored.

    The service sends it as fast as the mailbox's limits allow, retries, and never sends it
    twice: prefer this to send_mail for anything that need not be sent before the call returns.
    Give the message an idempotency_key so a retried QueueMail queues it once.
    """
    queued = mailer_pb2.QueueMailRequest(message=request)
    if send_at is not None:
        queued.send_at.FromDatetime(send_at)
    try:
        return mailer.QueueMail(queued)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
            raise SetupRequired(error.details()) from error
        raise


FINAL_STATES = (
    mailer_pb2.MESSAGE_STATE_SENT,
    mailer_pb2.MESSAGE_STATE_FAILED,
    mailer_pb2.MESSAGE_STATE_CANCELLED,
)


def get_message(mailer, message_id):
    """What became of a queued message (its MessageStatus)."""
    return mailer.GetMessage(mailer_pb2.GetMessageRequest(message_id=message_id))


def wait_until_final(mailer, message_id, timeout=60, poll=0.2):
    """Polls GetMessage until the message is SENT, FAILED or CANCELLED."""
    deadline = time.time() + timeout
    while True:
        status = get_message(mailer, message_id)
        if status.state in FINAL_STATES or time.time() > deadline:
            return status
        time.sleep(poll)


def watch_messages(mailer, after_sequence=0, mailbox="", batch_id=""):
    """Yields every state change (MessageEvent) after `after_sequence`, resuming where it left
    off when the stream breaks: keep the last event's sequence and pass it back."""
    while True:
        request = mailer_pb2.WatchMessagesRequest(
            after_sequence=after_sequence, mailbox=mailbox, batch_id=batch_id
        )
        try:
            for event in mailer.WatchMessages(request):
                after_sequence = event.sequence
                yield event
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise
            time.sleep(0.5)
