"""``reconciler keygen``, ``sign`` and ``verify``: cosign-compatible keys and signatures from the
command line (reconciler.trust.signing does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from reconciler import reasons, trust
from reconciler.cli.exits import EXIT_OK
from reconciler.errors import Stalled, UsageError
from reconciler.trust.signing import (
    load_signing_key,
    read_named,
    read_password,
    sha256_file,
    sign_file,
    write_key_pair,
)

__all__ = ["add_subcommands"]


def add_subcommands(commands: argparse._SubParsersAction) -> None:
    keygen = commands.add_parser("keygen", help="create a cosign-compatible key pair (PREFIX.key, PREFIX.pub)")
    keygen.add_argument("--output-prefix", "--output-key-prefix", dest="output_prefix", type=Path,
                        default=Path("cosign"), help="where to write the key pair (default: ./cosign)")
    keygen.set_defaults(handler=cmd_keygen)

    sign = commands.add_parser("sign", help="sign a file as `cosign sign-blob --key` does")
    sign.add_argument("file", type=Path)
    sign.add_argument("--key", required=True, type=Path, help="private key (cosign encrypted, or unencrypted PEM)")
    sign.add_argument("--output-signature", type=Path, help="where to write the .sig (default: FILE.sig)")
    sign.add_argument("--bundle", type=Path, help="also write a Sigstore bundle here")
    sign.set_defaults(handler=cmd_sign)

    verify = commands.add_parser("verify", help="verify a file's cosign signature or Sigstore bundle")
    verify.add_argument("file", type=Path)
    verify.add_argument("--key", dest="keys", action="append", type=Path, default=[],
                        help="trusted public key PEM (repeatable)")
    verify.add_argument("--identity", help="keyless: the certificate identity (e.g. an e-mail or workflow URL)")
    verify.add_argument("--issuer", help="keyless: the OIDC issuer URL")
    verify.add_argument("--trusted-root", type=Path,
                        help="keyless: Sigstore trusted_root.json (default: the public Sigstore root, read offline)")
    material = verify.add_mutually_exclusive_group()
    material.add_argument("--signature", type=Path, help="cosign .sig file (default: FILE.sig)")
    material.add_argument("--bundle", type=Path, help="Sigstore or model_signing bundle (the format is read from the content)")
    verify.set_defaults(handler=cmd_verify)


def cmd_keygen(args: argparse.Namespace) -> int:
    key_path, pub_path = write_key_pair(args.output_prefix, read_password(confirm=True))
    key = trust.load_public_key(pub_path.read_bytes(), str(pub_path))
    print(f"Private key written to {key_path}")
    print(f"Public key written to {pub_path} (key id {key.key_id})")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    key = load_signing_key(args.key)
    result = sign_file(args.file, key)
    signature_path = args.output_signature or _sibling(args.file, ".sig")
    _write(signature_path, result.cosign_signature)
    print(f"Signed {args.file} with {_key_name(args.key, key.public_key())}")
    print(f"Signature written to {signature_path}")
    if args.bundle:
        _write(args.bundle, result.bundle)
        print(f"Bundle written to {args.bundle}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    if bool(args.identity) != bool(args.issuer):
        raise UsageError("--identity and --issuer go together")
    if not args.keys and not args.identity:
        raise UsageError("verify needs --key PUB, or --identity ID with --issuer URL")
    keys = tuple(trust.load_public_key(read_named(path, reasons.TrustKeyInvalid, "public key"), str(path)) for path in args.keys)
    identities = (trust.KeylessIdentity(args.identity, args.issuer),) if args.identity else ()
    roots = trust.TrustRoots(keys=keys, identities=identities, sigstore_trusted_root=args.trusted_root)
    signature_path = args.bundle or args.signature or _sibling(args.file, ".sig")
    signature = read_named(signature_path, reasons.SignatureMissing, "signature")
    digest = sha256_file(args.file)
    try:
        verified = trust.verify_artifact_signature(digest, args.file.name, signature, None, roots)
    except Stalled as exc:
        raise exc.add_context(f"{args.file} with {signature_path}") from None
    print(f"Verified OK: {args.file}: {verified}")
    return EXIT_OK


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _key_name(path: Path, public_key: ec.EllipticCurvePublicKey) -> str:
    return str(trust.TrustedKey(name=str(path), public_key=public_key))


def _write(path: Path, content: bytes) -> None:
    try:
        path.write_bytes(content)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
