"""Signature bundles built from their documented shapes with plain json + cryptography, never with
the code under test, so the tests check our verifier against the formats rather than against itself.

- Key bundles as ``cosign sign-blob --key --bundle`` (messageSignature) and ``cosign attest-blob
  --key`` / OpenSSF model_signing (dsseEnvelope holding an in-toto Statement) write them: Sigstore
  protobuf-specs Bundle JSON, ``verificationMaterial.publicKey.hint`` as cosign computes it.
- ``LocalSigstore``: a stand-in for the public Sigstore instance, made of a CA (Fulcio), a CT log
  key and a Rekor key, plus the ``trusted_root.json`` that trusts them. It issues a short-lived
  certificate for an identity with an embedded precertificate SCT, enters the signature in a
  two-leaf Rekor tree and returns a keyless bundle with inclusion proof, signed checkpoint and
  inclusion promise (SET) — everything a verifier needs offline."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
MEDIA_TYPES = [
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    BUNDLE_V03,
]
IN_TOTO = "application/vnd.in-toto+json"
MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0"
ISSUER = "https://token.actions.example.com"
IDENTITY = "https://git.example.com/ml/models/.github/workflows/release.yml@refs/heads/main"

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_SCT_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
_ISSUER_V1_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_ISSUER_V2_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def der_public_key(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def cosign_hint(key: ec.EllipticCurvePrivateKey) -> str:
    """cosign: base64 of SHA-256 of the PKIX (DER) public key."""
    return b64(hashlib.sha256(der_public_key(key)).digest())


def model_signing_hint(key: ec.EllipticCurvePrivateKey) -> str:
    """OpenSSF model_signing: hex SHA-256 of the PEM public key."""
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(public).hexdigest()


def encode(bundle: dict[str, Any]) -> bytes:
    return json.dumps(bundle, indent=2).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    return b"DSSEv1 %d %b %d %b" % (len(payload_type.encode()), payload_type.encode(), len(payload), payload)


# --- key bundles ---------------------------------------------------------------------------------

def message_bundle(signer: ec.EllipticCurvePrivateKey, blob: bytes, *, media_type: str = BUNDLE_V03,
                   hint: str | None = "cosign", message_digest: bytes | None = None) -> dict[str, Any]:
    """What ``cosign sign-blob --key k --bundle b blob`` writes (without a tlog entry)."""
    digest = hashlib.sha256(blob).digest()
    material: dict[str, Any] = {"publicKey": {} if hint is None else {"hint": cosign_hint(signer) if hint == "cosign" else hint},
                                "tlogEntries": []}
    return {
        "mediaType": media_type,
        "verificationMaterial": material,
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64(message_digest or digest)},
            "signature": b64(signer.sign(blob, _ECDSA_SHA256)),
        },
    }


def envelope(signer: ec.EllipticCurvePrivateKey, statement: dict[str, Any] | bytes,
             payload_type: str = IN_TOTO) -> dict[str, Any]:
    """A DSSE envelope with one signature over PAE(payload_type, payload)."""
    payload = statement if isinstance(statement, bytes) else json.dumps(statement).encode()
    return {"payload": b64(payload), "payloadType": payload_type,
            "signatures": [{"sig": b64(signer.sign(pae(payload_type, payload), _ECDSA_SHA256)), "keyid": ""}]}


def dsse_bundle(signer: ec.EllipticCurvePrivateKey, statement: dict[str, Any] | bytes, *, payload_type: str = IN_TOTO,
                media_type: str = BUNDLE_V03, hint: str | None = None) -> dict[str, Any]:
    return {"mediaType": media_type,
            "verificationMaterial": {"publicKey": {"hint": hint or cosign_hint(signer)}, "tlogEntries": []},
            "dsseEnvelope": envelope(signer, statement, payload_type)}


def attest_statement(subjects: dict[str, bytes], statement_type: str = "https://in-toto.io/Statement/v1") -> dict[str, Any]:
    """``cosign attest-blob`` style: each blob a subject with its sha256."""
    return {"_type": statement_type,
            "subject": [{"name": name, "digest": {"sha256": hashlib.sha256(blob).hexdigest()}} for name, blob in subjects.items()],
            "predicateType": "https://slsa.dev/provenance/v1", "predicate": {"builder": {"id": "test"}}}


def model_signing_statement(files: dict[str, bytes], algorithm: str = "sha256") -> dict[str, Any]:
    """OpenSSF model_signing v1.0: the model as subject, each file a resource of the predicate."""
    resources = [{"name": name, "algorithm": algorithm, "digest": hashlib.sha256(blob).hexdigest()}
                 for name, blob in sorted(files.items())]
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    return {"_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "model", "digest": {"sha256": root}}],
            "predicateType": MODEL_SIGNING_PREDICATE,
            "predicate": {"serialization": {"method": "files", "hash_type": algorithm, "allow_symlinks": False,
                                            "ignore_paths": []},
                          "resources": resources}}


# --- a local Sigstore ----------------------------------------------------------------------------

@dataclass
class LocalSigstore:
    """Fulcio, CT log and Rekor stand-ins that share one clock, ``now``."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    ca_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    ct_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rekor_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    log_index: int = 0

    def __post_init__(self) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "local"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "local-fulcio")])
        self.ca = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self.now - timedelta(days=1)).not_valid_after(self.now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )

    def trusted_root(self) -> dict[str, Any]:
        start = (self.now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            return {"baseUrl": url, "hashAlgorithm": "SHA2_256",
                    "publicKey": {"rawBytes": b64(der_public_key(key)), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                  "validFor": {"start": start}},
                    "logId": {"keyId": b64(_key_id(key))}}

        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.rekor_key, "https://rekor.local.invalid")],
            "certificateAuthorities": [{
                "subject": {"organization": "local", "commonName": "local-fulcio"},
                "uri": "https://fulcio.local.invalid",
                "certChain": {"certificates": [{"rawBytes": b64(self.ca.public_bytes(serialization.Encoding.DER))}]},
                "validFor": {"start": start},
            }],
            "ctlogs": [log(self.ct_key, "https://ctfe.local.invalid")],
            "timestampAuthorities": [],
        }

    def write_trusted_root(self, path: Path) -> Path:
        path.write_text(json.dumps(self.trusted_root(), indent=2))
        return path

    def certificate(self, signing_key: ec.EllipticCurvePrivateKey, identity: str, issuer: str,
                    *, email: bool = False, valid_from: datetime | None = None,
                    issuer_extensions: tuple[str, ...] = ("v1", "v2")) -> x509.Certificate:
        """A Fulcio-profile leaf for ``identity``, with an SCT over its precertificate. Fulcio
        names the OIDC issuer in two extensions, the old one being deprecated."""
        not_before = valid_from or self.now - timedelta(minutes=1)
        serial = x509.random_serial_number()

        def build(sct_list: bytes) -> x509.Certificate:
            san = x509.RFC822Name(identity) if email else x509.UniformResourceIdentifier(identity)
            builder = (
                x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.ca.subject)
                .public_key(signing_key.public_key()).serial_number(serial)
                .not_valid_before(not_before).not_valid_after(not_before + timedelta(minutes=10))
                .add_extension(_key_usage(cert_sign=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(signing_key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False)
                .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            )
            if "v1" in issuer_extensions:
                builder = builder.add_extension(x509.UnrecognizedExtension(_ISSUER_V1_OID, issuer.encode()), critical=False)
            if "v2" in issuer_extensions:
                builder = builder.add_extension(x509.UnrecognizedExtension(_ISSUER_V2_OID, _der_utf8(issuer)), critical=False)
            return (builder.add_extension(x509.UnrecognizedExtension(_SCT_OID, _der_octets(sct_list)), critical=False)
                    .sign(self.ca_key, hashes.SHA256()))

        # The SCT signs the certificate minus its SCT extension, so sign what a placeholder leaves.
        placeholder = build(self._sct_list(b"\x00" * 70, 0))
        timestamp_ms = int(self.now.timestamp() * 1000)
        signed = struct.pack(">BBQH", 0, 0, timestamp_ms, 1) + _key_id(self.ca_key) \
            + _u24(placeholder.tbs_precertificate_bytes) + struct.pack(">H", 0)
        return build(self._sct_list(self.ct_key.sign(signed, _ECDSA_SHA256), timestamp_ms))

    def _sct_list(self, signature: bytes, timestamp_ms: int) -> bytes:
        sct = (struct.pack(">B", 0) + _key_id(self.ct_key) + struct.pack(">QH", timestamp_ms, 0)
               + struct.pack(">BBH", 4, 3, len(signature)) + signature)  # sha256, ecdsa
        entry = struct.pack(">H", len(sct)) + sct
        return struct.pack(">H", len(entry)) + entry

    def sign_blob(self, blob: bytes, identity: str = IDENTITY, issuer: str = ISSUER, *,
                  media_type: str = BUNDLE_V03, **certificate_options: Any) -> dict[str, Any]:
        """``cosign sign-blob --bundle`` keyless: messageSignature + hashedrekord 0.0.1 entry."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self.certificate(key, identity, issuer, **certificate_options)
        digest = hashlib.sha256(blob).digest()
        signature = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        body = _hashedrekord(digest, signature, certificate)
        return {"mediaType": media_type,
                "verificationMaterial": self._material(certificate, body, media_type),
                "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": b64(digest)},
                                     "signature": b64(signature)}}

    def sign_cosign_payload(self, payload: bytes, identity: str = IDENTITY, issuer: str = ISSUER,
                            **certificate_options: Any) -> dict[str, str]:
        """``cosign sign`` keyless with the legacy tag scheme: the annotations of the payload's
        simple-signing layer (cosign ``pkg/oci/static``, ``pkg/cosign/bundle/rekor.go``): the
        base64 signature, the Fulcio certificate and chain in PEM, and the Rekor bundle, the SET
        over the hashedrekord entry as Go's json.Marshal writes ``RekorBundle``."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self.certificate(key, identity, issuer, **certificate_options)
        signature = key.sign(payload, _ECDSA_SHA256)
        body = _hashedrekord(hashlib.sha256(payload).digest(), signature, certificate)
        entry = self._log(json.dumps(body, separators=(",", ":")).encode(), "hashedrekord")
        rekor_bundle = {"SignedEntryTimestamp": entry["inclusionPromise"]["signedEntryTimestamp"],
                        "Payload": {"body": entry["canonicalizedBody"], "integratedTime": int(entry["integratedTime"]),
                                    "logIndex": int(entry["logIndex"]), "logID": _key_id(self.rekor_key).hex()}}
        return {"dev.cosignproject.cosign/signature": b64(signature),
                "dev.sigstore.cosign/certificate": certificate.public_bytes(serialization.Encoding.PEM).decode(),
                "dev.sigstore.cosign/chain": self.ca.public_bytes(serialization.Encoding.PEM).decode(),
                "dev.sigstore.cosign/bundle": json.dumps(rekor_bundle, separators=(",", ":"))}

    def sign_statement(self, statement: dict[str, Any], identity: str = IDENTITY, issuer: str = ISSUER) -> dict[str, Any]:
        """``cosign attest-blob`` / model_signing keyless: dsseEnvelope + dsse 0.0.1 entry."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self.certificate(key, identity, issuer)
        dsse = envelope(key, statement)
        payload = base64.b64decode(dsse["payload"])
        body = {"apiVersion": "0.0.1", "kind": "dsse",
                "spec": {"envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(json.dumps(dsse).encode()).hexdigest()},
                         "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
                         "signatures": [{"signature": dsse["signatures"][0]["sig"], "verifier": _pem_b64(certificate)}]}}
        return {"mediaType": BUNDLE_V03, "verificationMaterial": self._material(certificate, body, BUNDLE_V03),
                "dsseEnvelope": dsse}

    def _material(self, certificate: x509.Certificate, body: dict[str, Any], media_type: str) -> dict[str, Any]:
        raw_certificate = {"rawBytes": b64(certificate.public_bytes(serialization.Encoding.DER))}
        material: dict[str, Any] = {"tlogEntries": [self._log(json.dumps(body, separators=(",", ":")).encode(), body["kind"])]}
        if media_type == BUNDLE_V03 or media_type.endswith("version=0.3"):
            material["certificate"] = raw_certificate
        else:
            material["x509CertificateChain"] = {"certificates": [raw_certificate]}
        return material

    def _log(self, body: bytes, kind: str) -> dict[str, Any]:
        """Rekor: append ``body`` as leaf 0 of a two-leaf tree, sign a checkpoint and a SET."""
        integrated_time = int(self.now.timestamp())
        log_id = _key_id(self.rekor_key)
        leaf, sibling = _leaf_hash(body), _leaf_hash(b"another entry")
        root = hashlib.sha256(b"\x01" + leaf + sibling).digest()
        note = f"rekor.local - 42\n2\n{b64(root)}\n"
        note_signature = self.rekor_key.sign(note.encode(), _ECDSA_SHA256)
        checkpoint = f"{note}\n\u2014 rekor.local {b64(log_id[:4] + note_signature)}\n"
        promise = json.dumps({"body": b64(body), "integratedTime": integrated_time, "logID": log_id.hex(),
                              "logIndex": self.log_index}, sort_keys=True, separators=(",", ":")).encode()
        return {
            "logIndex": str(self.log_index),
            "logId": {"keyId": b64(log_id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": str(integrated_time),
            "inclusionPromise": {"signedEntryTimestamp": b64(self.rekor_key.sign(promise, _ECDSA_SHA256))},
            "inclusionProof": {"logIndex": str(self.log_index), "rootHash": b64(root), "treeSize": "2",
                               "hashes": [b64(sibling)], "checkpoint": {"envelope": checkpoint}},
            "canonicalizedBody": b64(body),
        }


def _hashedrekord(digest: bytes, signature: bytes, certificate: x509.Certificate) -> dict[str, Any]:
    """A Rekor hashedrekord 0.0.1 entry: the signature over a sha256 digest, the certificate as its key."""
    return {"apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {"data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
                     "signature": {"content": b64(signature), "publicKey": {"content": _pem_b64(certificate)}}}}


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def _key_id(key: ec.EllipticCurvePrivateKey) -> bytes:
    """RFC 6962 log id: SHA-256 of the DER public key."""
    return hashlib.sha256(der_public_key(key)).digest()


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _u24(data: bytes) -> bytes:
    return struct.pack(">I", len(data))[1:] + data


def _der_octets(data: bytes) -> bytes:
    return b"\x04" + _der_length(len(data)) + data


def _der_utf8(text: str) -> bytes:
    return b"\x0c" + _der_length(len(text.encode())) + text.encode()


def _der_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _pem_b64(certificate: x509.Certificate) -> str:
    return b64(certificate.public_bytes(serialization.Encoding.PEM))
