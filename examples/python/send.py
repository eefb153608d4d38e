#!/usr/bin/python3
"""Send one message through a Kurier node, without Kurier's Go code.

This client follows docs/PROTOCOL.md, "Writing a client in another
language", step by step (the section headings below name the steps): gRPC stubs generated from proto/kurier/v1, the
cryptography package for certificates and the envelope signature, and the
openssl command for the payload's CMS layers (SignedData, then
EnvelopedData), which cryptography cannot write. README.md beside it says
how to run it.

    PYTHONPATH=gen /usr/bin/python3 send.py --node 127.0.0.1:7443 \\
        --ca ca.pem --cert cert.pem --key key.pem \\
        --to eingang@amtsgericht.example --subject Klage klage.pdf

Exit status: 0 sent, 1 refused or failed (the reason on stderr), 2 usage.
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
import tempfile
import time

try:
    import grpc
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs7
    from kurier.v1 import directory_pb2, directory_pb2_grpc, mailbox_pb2, mailbox_pb2_grpc, types_pb2
except ImportError as err:
    sys.exit(f"send.py: {err}: install python3-grpcio python3-protobuf python3-grpc-tools python3-cryptography "
             "and generate the stubs into a folder on PYTHONPATH (README.md)")

# PROTOCOL.md, "Writing a client in another language": the numbers a client needs.
ENVELOPE_VERSION = 3          # what clients write: files carry their sha256
CHUNK_SIZE = 256 << 10        # payload bytes per Submit frame (at most 1 MiB)
MAX_ENVELOPE = 256 << 10      # bytes of envelope JSON
MIN_RSA_BITS = 3072           # smallest encryption key to encrypt to
DEFAULT_EXPIRY_DAYS = 7
LOOKUP_TIMEOUT = 30           # seconds for each directory call
MAX_SUBJECT, MAX_TYPE, MAX_REFERENCE, MAX_NAME = 1024, 128, 256, 255

LOCAL_RE = re.compile(r"^[a-z0-9._+-]{1,64}$")
UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class Failure(Exception):
    """Something the person running send.py must fix; the text says what."""


class Refused(Failure):
    """The node refused the submission with a gRPC status."""

    def __init__(self, msg_id, code, message, rejection):
        super().__init__(f"the node refused message {msg_id}: {code.name}: {message}")
        self.code = code
        self.rejection = rejection  # SubmissionRejection evidence DER, or None


# ---- 4. the envelope's text rules (PROTOCOL.md, Envelope) -----------------

def hostile(ch):
    """Characters that envelopes refuse: C0/C1 controls, DEL, bidi controls."""
    o = ord(ch)
    return o < 0x20 or o == 0x7F or 0x80 <= o <= 0x9F or 0x202A <= o <= 0x202E or 0x2066 <= o <= 0x2069


def check_text(field, text, limit, required=False):
    if required and not text.strip():
        raise Failure(f"{field} is empty")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise Failure(f"{field} is not UTF-8") from None
    if size > limit:
        raise Failure(f"{field} is {size} bytes, at most {limit}")
    for ch in text:
        if hostile(ch):
            raise Failure(f"{field} contains U+{ord(ch):04X}, a control character envelopes refuse")


def check_address(addr):
    local, at, domain = addr.partition("@")
    labels = domain.split(".")
    if (not at or not LOCAL_RE.match(local) or local[0] == "." or local[-1] == "." or ".." in local
            or len(labels) < 2 or not all(LABEL_RE.match(label) for label in labels)):
        raise Failure(f"{addr!r} is not a Kurier address (local@domain, lowercase a-z 0-9 . - _ +)")
    return addr


def domain_of(addr):
    return addr.partition("@")[2]


# ---- 4. canonical JSON -----------------------------------------------------

def json_string(s):
    """A JSON string as Kurier writes it: only " and \\ and U+2028/U+2029
    escaped, everything else (non-ASCII, <, >, &) as its UTF-8 self."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        elif ord(ch) < 0x20:
            raise Failure(f"U+{ord(ch):04X} cannot be part of an envelope")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def canonical(value):
    """Canonical JSON of objects (keys in the order given), arrays, strings
    and integers: no white space, no newline at the end."""
    if isinstance(value, dict):
        return "{" + ",".join(json_string(k) + ":" + canonical(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, str):
        return json_string(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"no canonical JSON for {type(value).__name__}")


def rfc3339(t):
    """UTC time as Go's RFC 3339 with nanoseconds writes it: the fraction
    only if not zero, without trailing zeros, then Z."""
    t = t.astimezone(datetime.timezone.utc)
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        s += f".{t.microsecond:06d}".rstrip("0")
    return s + "Z"


def uuid7():
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, version 7,
    random bits, variant 10; lowercase."""
    b = bytearray(int(time.time() * 1000).to_bytes(6, "big") + secrets.token_bytes(10))
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# ---- certificates and openssl ----------------------------------------------

def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise Failure(f"read {path}: {err.strerror}") from None


def load_certs(path):
    """Every certificate of a PEM file, in order."""
    data, certs = read(path), []
    marker = b"-----BEGIN CERTIFICATE-----"
    for part in data.split(marker)[1:]:
        certs.append(x509.load_pem_x509_certificate(marker + part))
    if not certs:
        raise Failure(f"{path} holds no PEM certificate")
    return certs


def emails(cert):
    """The certificate's email SANs, and whether it names anything else."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], False
    mail = san.get_values_for_type(x509.RFC822Name)
    return mail, len(list(san)) != len(mail)


def participant(cert, what):
    mail, others = emails(cert)
    if len(mail) != 1 or others:
        raise Failure(f"{what} names {mail}, not exactly one address: it is no participant certificate")
    return check_address(mail[0])


def openssl(args, *argv):
    r = subprocess.run([args.openssl, *argv], capture_output=True)
    if r.returncode != 0:
        detail = r.stderr.decode("utf-8", "replace").strip().splitlines()
        raise Failure(f"openssl {' '.join(argv[:2])}: " + ("; ".join(detail[:3]) or f"exit status {r.returncode}"))
    return r.stdout


# ---- 2. look up the recipients ---------------------------------------------

def fetch_crl(directory, roots, tmp):
    """GetCRL, checked: signed by one of the roots and not past nextUpdate.
    Written as PEM for openssl's -CRLfile."""
    der = directory.GetCRL(directory_pb2.GetCRLRequest(), timeout=LOOKUP_TIMEOUT).crl
    crl = x509.load_der_x509_crl(der)
    if not any(c.subject == crl.issuer and crl.is_signature_valid(c.public_key()) for c in roots):
        raise Failure("the node's CRL is not signed by the CA of --ca")
    if crl.next_update is None or crl.next_update < datetime.datetime.utcnow():
        raise Failure("the node's CRL is out of date (past its nextUpdate); its operator must renew it")
    path = os.path.join(tmp, "crl.pem")
    with open(path, "wb") as f:
        f.write(crl.public_bytes(serialization.Encoding.PEM))
    return path


def encryption_cert(args, directory, addr, crl_path, tmp, n):
    """Lookup, then every check of the recipient's encryption certificate;
    returns its PEM file."""
    resp = directory.Lookup(directory_pb2.LookupRequest(address=addr), timeout=LOOKUP_TIMEOUT)
    if not resp.exists:
        raise Failure(f"no mailbox {addr}")
    if resp.entry.address != addr:
        raise Failure(f"the directory answered for {resp.entry.address!r}, not {addr}")
    cert = x509.load_der_x509_certificate(resp.entry.encryption_certificate)
    mail, others = emails(cert)
    if mail != [addr] or others:
        raise Failure(f"the encryption certificate of {addr} names {mail}, not exactly {addr}")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        raise Failure(f"the encryption certificate of {addr} has no RSA key of at least {MIN_RSA_BITS} bits")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not usage.key_encipherment:
        raise Failure(f"the encryption certificate of {addr} does not allow key encipherment")
    path = os.path.join(tmp, f"recipient-{n}.pem")
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    # Chain to the CA, valid now, not revoked, emailProtection: openssl's checks.
    openssl(args, "verify", "-CAfile", args.ca, "-CRLfile", crl_path, "-crl_check_all",
            "-purpose", "smimeencrypt", path)
    return path


# ---- 3. seal the payload ---------------------------------------------------

def pack(documents, path):
    """The document bundle: a POSIX tar of regular files in envelope order."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for src, name, size, _ in documents:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mode, info.mtime = tarfile.REGTYPE, size, 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(src, "rb") as f:
                tar.addfile(info, f)


def seal(args, documents, recipients, tmp):
    """tar, then attached SignedData by the sender, then EnvelopedData to
    every recipient; returns the payload file, its size and SHA-256."""
    bundle, signed, payload = (os.path.join(tmp, n) for n in ("bundle.tar", "signed.p7m", "payload.p7m"))
    pack(documents, bundle)
    sign = ["cms", "-sign", "-nodetach", "-binary", "-md", "sha256", "-stream", "-outform", "DER",
            "-signer", args.sign_cert, "-inkey", args.sign_key, "-in", bundle, "-out", signed]
    if args.chain:
        sign += ["-certfile", args.chain]
    openssl(args, *sign)
    encrypt = ["cms", "-encrypt", "-aes-256-cbc", "-binary", "-stream", "-outform", "DER", "-in", signed, "-out", payload]
    for cert in recipients:
        encrypt += ["-recip", cert, "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256",
                    "-keyopt", "rsa_mgf1_md:sha256"]
    openssl(args, *encrypt)
    h, size = hashlib.sha256(), 0
    with open(payload, "rb") as f:
        while block := f.read(CHUNK_SIZE):
            h.update(block)
            size += len(block)
    return payload, size, h.hexdigest()


# ---- 4. and 5. write and sign the envelope ---------------------------------

def build_envelope(args, sender, documents, size, digest):
    created = datetime.datetime.now(datetime.timezone.utc)
    env = {  # the keys in this order: PROTOCOL.md, Envelope
        "version": ENVELOPE_VERSION,
        "id": args.id or uuid7(),
        "from": sender,
        "to": args.to,
        "subject": args.subject,
        "type": args.type,
        "reference": args.reference,
        "created": rfc3339(created),
        "expires": rfc3339(created + datetime.timedelta(days=args.expires_days)),
        "payload_sha256": digest,
        "payload_size": size,
        "files": [{"name": name, "size": n, "sha256": d} for _, name, n, d in documents],
    }
    data = canonical(env).encode("utf-8")
    if args.non_canonical:
        # For checking a node: the same envelope with white space, validly
        # signed, which the node must refuse.
        data = json.dumps(env, indent=1, ensure_ascii=False).encode("utf-8")
    if len(data) > MAX_ENVELOPE:
        raise Failure(f"the envelope is {len(data)} bytes, at most {MAX_ENVELOPE}: fewer recipients or files")
    return env, data


def sign_envelope(args, data):
    """Detached CMS SignedData (DER, SHA-256) over the envelope bytes."""
    cert = load_certs(args.sign_cert)
    key = serialization.load_pem_private_key(read(args.sign_key), password=None)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(cert[0], key, hashes.SHA256())
    for c in cert[1:]:
        builder = builder.add_certificate(c)
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])


# ---- 6. submit ---------------------------------------------------------------

def frames(data, signature, payload):
    yield mailbox_pb2.SubmitRequest(envelope=types_pb2.SignedEnvelope(envelope=data, signature=signature))
    with open(payload, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            yield mailbox_pb2.SubmitRequest(chunk=chunk)


def submit(mailbox, msg_id, data, signature, payload, deadline):
    """Submit the sealed message; the same bytes again while the outcome is
    unknown (Unavailable) or the node asks to wait (RetryInfo)."""
    wait = 0.2
    while True:
        left = deadline - time.monotonic()
        try:
            return mailbox.Submit(frames(data, signature, payload), timeout=max(left, 1))
        except grpc.RpcError as err:
            code, message = err.code(), err.details() or ""
            try:
                rejection, retry_after = status_details(err.trailing_metadata() or ())
            except (IndexError, ValueError, UnicodeDecodeError):
                rejection = retry_after = None  # details that do not parse: the status still says why
            again = code == grpc.StatusCode.UNAVAILABLE or (
                code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after is not None)
            pause = max(wait, retry_after or 0)
            if not again or time.monotonic() + pause > deadline:
                raise Refused(msg_id, code, message, rejection) from None
            print(f"send.py: {code.name}: {message}; trying again in {pause:.1f}s with the same sealed message",
                  file=sys.stderr)
            time.sleep(pause)
            wait = min(wait * 2, 10)


def fields(buf):
    """(field number, wire type, value) of a protobuf message: enough of the
    wire format to read google.rpc.Status without its generated code."""
    i = 0

    def varint():
        nonlocal i
        shift = result = 0
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    while i < len(buf):
        key = varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            yield num, wire, varint()
        elif wire == 2:
            n = varint()
            yield num, wire, buf[i:i + n]
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            return


def status_details(metadata):
    """The SubmissionRejection evidence and RetryInfo delay in a status's
    details (the grpc-status-details-bin trailer, a google.rpc.Status)."""
    rejection = retry_after = None
    for key, value in metadata:
        if key != "grpc-status-details-bin":
            continue
        for num, _, any_msg in fields(value):
            if num != 3:  # Status.details: repeated google.protobuf.Any
                continue
            parts = {n: v for n, _, v in fields(any_msg)}
            url, body = bytes(parts.get(1, b"")).decode(), parts.get(2, b"")
            if url.endswith("/kurier.v1.SubmissionRejected"):
                rejection = mailbox_pb2.SubmissionRejected.FromString(body).evidence.der
            elif url.endswith("/google.rpc.RetryInfo"):
                for n, _, dur in fields(body):  # RetryInfo.retry_delay: Duration
                    if n == 1:
                        d = {k: v for k, _, v in fields(dur)}
                        retry_after = d.get(1, 0) + d.get(2, 0) / 1e9
    return rejection, retry_after


# ---- 7. check the evidence -------------------------------------------------

def verify_evidence(args, der, crl_path, tmp, n):
    """openssl cms -verify against the CA and CRL; the statement and the
    signer's certificate."""
    src, signer = os.path.join(tmp, f"evidence-{n}.p7m"), os.path.join(tmp, f"evidence-{n}-signer.pem")
    with open(src, "wb") as f:
        f.write(der)
    # openssl cms has no -CRLfile: the CRL goes into the -CAfile, after the CA.
    trust = os.path.join(tmp, "ca-and-crl.pem")
    if not os.path.exists(trust):
        save(tmp, "ca-and-crl.pem", read(args.ca) + b"\n" + read(crl_path))
    out = openssl(args, "cms", "-verify", "-inform", "DER", "-in", src, "-CAfile", trust,
                  "-crl_check_all", "-signer", signer)
    return json.loads(out), load_certs(signer)[0]


def issuers(typ, sender, to):
    """Who may issue evidence of a type about the copy for to (PROTOCOL.md,
    Evidence): a node's domain, or the recipient's own address."""
    s, r = domain_of(sender), domain_of(to)
    return {"SubmissionAcceptance": {s}, "RelayAcceptance": {r}, "RelayRejection": {r}, "Delivery": {r},
            "Retrieval": {r}, "NonDelivery": {s, r}, "Acknowledgement": {to}, "Rejection": {to}}.get(typ, set())


# Which evidence type may follow which in a copy's chain (PROTOCOL.md,
# Chains and the state machine); None is the start.
FOLLOWS = {
    None: {"SubmissionAcceptance"},
    "SubmissionAcceptance": {"Delivery", "RelayAcceptance", "RelayRejection", "NonDelivery"},
    "RelayAcceptance": {"Delivery", "RelayAcceptance", "RelayRejection", "NonDelivery"},
    "Delivery": {"Retrieval", "NonDelivery"},
    "Retrieval": {"Acknowledgement", "Rejection"},
    "RelayRejection": {"NonDelivery"},
}


def speaks_for(signer, issuer):
    """A node certificate listing the issuer domain, or the recipient's own
    participant certificate for an issuer address."""
    try:
        san = signer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if "@" in issuer:
        return san.get_values_for_type(x509.RFC822Name) == [issuer]
    return issuer in san.get_values_for_type(x509.DNSName)


def check_receipt(args, resp, env, data, crl_path, tmp):
    """Every evidence verifies, is about this envelope and payload, is
    issued by whom its type requires, and each recipient's chain starts
    with its SubmissionAcceptance and links each evidence to the one
    before. A first submission gets SubmissionAcceptance and, for a
    recipient of the same node, Delivery; a repeated one each chain as it
    stands by then."""
    if resp.message_id != env["id"]:
        raise Failure(f"the node confirmed message {resp.message_id!r}, not {env['id']}")
    env_digest = hashlib.sha256(data).hexdigest()
    chains, checked = {}, []
    for n, ev in enumerate(resp.evidence, 1):
        st, signer = verify_evidence(args, ev.der, crl_path, tmp, n)
        typ, to, issuer = st.get("type"), st.get("recipient"), st.get("issuer")
        if (st.get("message_id"), st.get("sender"), st.get("envelope_sha256"), st.get("payload_sha256")) != (
                env["id"], env["from"], env_digest, env["payload_sha256"]):
            raise Failure(f"evidence {n} ({typ}) names another message, sender, envelope or payload")
        if to not in env["to"]:
            raise Failure(f"evidence {n} ({typ}) is about {to!r}, not a recipient")
        if issuer not in issuers(typ, env["from"], to) or not speaks_for(signer, issuer):
            raise Failure(f"evidence {n} is a {typ} issued as {issuer!r} by {signer.subject.rfc4514_string()}, "
                          "who may not issue it")
        chain = chains.setdefault(to, [])  # (type, SHA-256 of the DER) of each
        last, prev = chain[-1] if chain else (None, "")
        if typ not in FOLLOWS.get(last, set()) or st.get("previous_sha256") != prev:
            raise Failure(f"evidence {n} ({typ}) does not continue the chain of {to}")
        chain.append((typ, hashlib.sha256(ev.der).hexdigest()))
        checked.append((st, ev.der))
    missing = [to for to in env["to"] if to not in chains]
    if missing:
        raise Failure(f"no SubmissionAcceptance for {', '.join(missing)} in the node's answer")
    return checked


def save(folder, name, data):
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# ---- 1. connect, and the steps in order ------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(prog="send.py", description="Send one message through a Kurier node.")
    p.add_argument("--node", required=True, help="the home node, host:port")
    p.add_argument("--ca", required=True, help="the federation's CA certificate(s), PEM")
    p.add_argument("--cert", required=True, help="the participant's certificate (TLS), PEM, intermediates after it")
    p.add_argument("--key", required=True, help="its private key, PEM")
    p.add_argument("--sign-cert", help="the signing certificate (default: --cert)")
    p.add_argument("--sign-key", help="its private key (default: --key)")
    p.add_argument("--to", action="append", required=True, help="a recipient's address; repeat for more")
    p.add_argument("--subject", required=True)
    p.add_argument("--type", default="", help='what kind of message, e.g. "Schriftsatz"')
    p.add_argument("--reference", default="", help="the Aktenzeichen")
    p.add_argument("--expires-days", type=int, default=DEFAULT_EXPIRY_DAYS,
                   help="days the message may take to reach the recipients' nodes (default 7)")
    p.add_argument("--id", help="the message id, a lowercase UUIDv7 (default: a new one); "
                   "an id the node holds for another message is refused")
    p.add_argument("--receipt", help="folder to write envelope.json, envelope.p7s and the evidence files into")
    p.add_argument("--timeout", type=float, default=300, help="seconds for the whole submission (default 300)")
    p.add_argument("--openssl", default="openssl", help="the openssl command")
    p.add_argument("--non-canonical", action="store_true",
                   help="for checking a node: send the envelope with white space, which the node must refuse")
    p.add_argument("files", nargs="+", metavar="FILE")
    args = p.parse_args(argv)
    args.sign_cert = args.sign_cert or args.cert
    args.sign_key = args.sign_key or args.key
    if args.id is not None and not UUID7_RE.match(args.id):
        p.error("--id must be a lowercase UUIDv7 (xxxxxxxx-xxxx-7xxx-[89ab]xxx-xxxxxxxxxxxx)")
    if args.expires_days < 1:
        p.error("--expires-days must be at least 1")
    return args


def documents_of(paths):
    docs, names = [], set()
    for path in paths:
        name = os.path.basename(path)
        check_text("file name", name, MAX_NAME)
        if not name or name in (".", "..") or "\\" in name:
            raise Failure(f"{path!r} has no usable file name")
        if name in names:
            raise Failure(f"two documents are named {name!r}")
        names.add(name)
        h, size = hashlib.sha256(), 0
        try:
            with open(path, "rb") as f:
                while block := f.read(CHUNK_SIZE):
                    h.update(block)
                    size += len(block)
        except OSError as err:
            raise Failure(f"{path}: {err.strerror}") from None
        docs.append((path, name, size, h.hexdigest()))
    return docs


def send(args):
    sender = participant(load_certs(args.cert)[0], args.cert)
    if participant(load_certs(args.sign_cert)[0], args.sign_cert) != sender:
        raise Failure(f"{args.sign_cert} is not a certificate of {sender}, whom {args.cert} names")
    roots = load_certs(args.ca)
    for addr in args.to:
        check_address(addr)
    if len(set(args.to)) != len(args.to):
        raise Failure("a recipient is named twice")
    check_text("subject", args.subject, MAX_SUBJECT, required=True)
    check_text("type", args.type, MAX_TYPE)
    check_text("reference", args.reference, MAX_REFERENCE)
    documents = documents_of(args.files)
    deadline = time.monotonic() + args.timeout

    creds = grpc.ssl_channel_credentials(root_certificates=read(args.ca), private_key=read(args.key),
                                         certificate_chain=read(args.cert))
    # The node proves a certificate for the domain of our own address,
    # whatever host name or IP --node names.
    options = [("grpc.ssl_target_name_override", domain_of(sender))]
    with grpc.secure_channel(args.node, creds, options=options) as channel, \
            tempfile.TemporaryDirectory(prefix="kurier-send-") as tmp:
        chain = load_certs(args.sign_cert)[1:]
        args.chain = None
        if chain:
            args.chain = os.path.join(tmp, "chain.pem")
            save(tmp, "chain.pem", b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        directory = directory_pb2_grpc.DirectoryServiceStub(channel)
        mailbox = mailbox_pb2_grpc.MailboxServiceStub(channel)
        crl_path = fetch_crl(directory, roots, tmp)
        recipients = [encryption_cert(args, directory, addr, crl_path, tmp, n) for n, addr in enumerate(args.to)]
        payload, size, digest = seal(args, documents, recipients, tmp)
        env, data = build_envelope(args, sender, documents, size, digest)
        signature = sign_envelope(args, data)
        if args.receipt:
            os.makedirs(args.receipt, exist_ok=True)
            save(args.receipt, "envelope.json", data)
            save(args.receipt, "envelope.p7s", signature)
        try:
            resp = submit(mailbox, env["id"], data, signature, payload, deadline)
        except Refused as refused:
            if refused.rejection and args.receipt:
                save(args.receipt, "00-SubmissionRejection.p7m", refused.rejection)
            raise
        checked = check_receipt(args, resp, env, data, crl_path, tmp)
    print("sent", env["id"])
    for n, (st, der) in enumerate(checked, 1):
        if args.receipt:
            save(args.receipt, f"{n:02d}-{st['type']}.p7m", der)
        print(f"  evidence: {st['type']} by {st['issuer']} for {st['recipient']} at {st['time']}")


def main(argv):
    args = parse_args(argv)
    try:
        send(args)
    except Refused as err:
        print(f"send.py: {err}", file=sys.stderr)
        if err.rejection:
            print("send.py: the node signed a SubmissionRejection"
                  + (f" ({args.receipt}/00-SubmissionRejection.p7m)" if args.receipt else ""), file=sys.stderr)
        return 1
    except grpc.RpcError as err:
        print(f"send.py: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    except (Failure, OSError) as err:
        print(f"send.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
