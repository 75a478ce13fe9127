"""`authsvc tenants ...` and `authsvc credentials ...`: provisioning, as gRPC clients."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from authsvc.api.v1 import identity_pb2, identity_pb2_grpc
from authsvc.cli.client import (
    EXIT_NEGATIVE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_client_args,
    add_yes_arg,
    channel,
    confirm,
    read_file_value,
)
from authsvc.cli.output import credential_doc, emit, json_mode, note, table, tenant_doc, when
from authsvc.files import write_private
from authsvc.identity.roles import ROLES

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
CREDENTIAL_COLUMNS = ["ID", "TENANT", "ROLES", "KIND", "STATE", "EXPIRES", "LAST USED", "DESCRIPTION"]
TENANT_COLUMNS = ["NAME", "SECTOR", "CREATED", "BY"]


def lifetime_arg(text: str) -> int:
    """--expires-in 90d: -> the expiry in ms since the epoch."""
    match = _DURATION.fullmatch(text)
    if not match or not int(match.group(1)):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number and a unit, e.g. 90d, 12h, 30m")
    return int((time.time() + int(match.group(1)) * _UNIT_S[match.group(2)]) * 1000)


def _credential_row(c: identity_pb2.Credential) -> list[str]:
    state = "revoked " + when(c.revoked_unix_ms) if c.revoked_unix_ms else "active"
    kind = f"{c.kind} {c.subject}" if c.subject else c.kind
    return [
        c.id,
        c.tenant or "(platform)",
        ",".join(c.roles),
        kind,
        state,
        when(c.expires_unix_ms),
        when(c.last_used_unix_ms),
        c.description,
    ]


def _tenant_row(t: identity_pb2.Tenant) -> list[str]:
    return [t.name, t.sector, when(t.created_unix_ms), t.created_by]


def write_secret_file(path: Path, text: str) -> None:
    """Creates `path` 0600 with `text`; refuses to overwrite (a key shown once must not be lost)."""
    try:
        write_private(path, text)
    except FileExistsError:
        raise CliError(
            f"{path} exists; choose another file (keys are never overwritten)", EXIT_USAGE
        ) from None


def tenants(args: argparse.Namespace) -> int:
    with channel(args) as ch:
        stub = identity_pb2_grpc.TenantServiceStub(ch)
        if args.action == "create":
            t = stub.CreateTenant(
                identity_pb2.CreateTenantRequest(name=args.name, sector=args.sector), timeout=args.timeout
            )
            emit(args, tenant_doc(t), f"created tenant {t.name} ({t.sector})")
        elif args.action == "show":
            t = stub.GetTenant(identity_pb2.GetTenantRequest(name=args.name), timeout=args.timeout)
            emit(args, tenant_doc(t), table(TENANT_COLUMNS, [_tenant_row(t)]))
        else:
            found = stub.ListTenants(identity_pb2.ListTenantsRequest(), timeout=args.timeout).tenants
            emit(
                args,
                {"tenants": [tenant_doc(t) for t in found]},
                table(TENANT_COLUMNS, [_tenant_row(t) for t in found]),
            )
    return EXIT_OK


def _create(args: argparse.Namespace, stub) -> None:
    if args.out and args.out.exists():  # checked first too: no key is minted that could not be written
        raise CliError(f"{args.out} exists; choose another file (keys are never overwritten)", EXIT_USAGE)
    reply = stub.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(
            tenant=args.tenant,
            roles=args.role,
            description=args.description,
            expires_unix_ms=args.expires_in or 0,
            audiohook_client_secret=args.audiohook,
        ),
        timeout=args.timeout,
    )
    doc = {"credential": credential_doc(reply.credential)}
    # With --audiohook: the API key, then the client secret (Genesys's two fields).
    secret = f"{reply.api_key}\n{reply.audiohook_client_secret}" if args.audiohook else reply.api_key
    if args.out:
        write_secret_file(args.out, secret)
        emit(args, {**doc, "key_file": str(args.out)}, None)
        note(f"created {reply.credential.id}; the key is in {args.out} (mode 0600)")
        return
    # Shown once, by design: this is the one place the key exists outside its holder.
    doc["api_key"] = reply.api_key
    if args.audiohook:
        doc["audiohook_client_secret"] = reply.audiohook_client_secret
    if not json_mode(args):
        note(f"created {reply.credential.id}; the key is shown once:")
    emit(args, doc, secret)


def credentials(args: argparse.Namespace) -> int:
    with channel(args) as ch:
        stub = identity_pb2_grpc.CredentialServiceStub(ch)
        if args.action == "create":
            _create(args, stub)
        elif args.action == "twilio-token":
            token = read_file_value(args.token_file or Path("-"), "the Twilio auth token")
            reply = stub.SetTwilioAuthToken(
                identity_pb2.SetTwilioAuthTokenRequest(tenant=args.tenant, auth_token=token),
                timeout=args.timeout,
            )
            emit(
                args,
                {"tenant": args.tenant, "stream_path": reply.stream_path},
                f"Twilio auth token set; stream to wss://<twilio bridge>{reply.stream_path}",
            )
        elif args.action == "map-cert":
            c = stub.MapCertificate(
                identity_pb2.MapCertificateRequest(
                    tenant=args.tenant,
                    subject=args.subject,
                    roles=args.role,
                    description=args.description,
                    expires_unix_ms=args.expires_in or 0,
                ),
                timeout=args.timeout,
            )
            emit(args, {"credential": credential_doc(c)}, table(CREDENTIAL_COLUMNS, [_credential_row(c)]))
        elif args.action == "list":
            found = stub.ListCredentials(
                identity_pb2.ListCredentialsRequest(tenant=args.tenant), timeout=args.timeout
            ).credentials
            emit(
                args,
                {"credentials": [credential_doc(c) for c in found]},
                table(CREDENTIAL_COLUMNS, [_credential_row(c) for c in found]),
            )
        else:
            if not confirm(args, f"revoke credential {args.id} (refused from its next request on)"):
                return EXIT_NEGATIVE
            c = stub.RevokeCredential(
                identity_pb2.RevokeCredentialRequest(tenant=args.tenant, credential_id=args.id),
                timeout=args.timeout,
            )
            emit(
                args,
                {"credential": credential_doc(c)},
                f"revoked {c.id} ({','.join(c.roles)}, {c.description or '-'})",
            )
    return EXIT_OK


def add_identity_commands(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tenants", help="provision tenants (platform-admin)").add_subparsers(
        dest="action", required=True
    )
    p = t.add_parser("create", help="provision a tenant and the sector its policy may not go below")
    p.add_argument("name")
    p.add_argument("--sector", required=True, choices=["general", "finance", "health"])
    add_client_args(p)
    p.set_defaults(func=tenants)
    p = t.add_parser("show", help="one tenant")
    p.add_argument("name")
    add_client_args(p)
    p.set_defaults(func=tenants)
    p = t.add_parser("list", help="every tenant")
    add_client_args(p)
    p.set_defaults(func=tenants)

    c = sub.add_parser("credentials", help="API keys and certificate identities").add_subparsers(
        dest="action", required=True
    )

    def grant(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tenant", default="", help="the tenant (omit for a platform-wide platform-admin)")
        p.add_argument("--role", action="append", required=True, choices=ROLES, help="repeat for several")
        p.add_argument("--description", default="", help="what the credential is for (shown in lists)")
        p.add_argument(
            "--expires-in", type=lifetime_arg, help="lifetime, e.g. 90d, 12h (default: until revoked)"
        )

    p = c.add_parser("create", help="create an API key (shown once)")
    grant(p)
    p.add_argument("--out", type=Path, help="write the key to this new file (0600) instead of stdout")
    p.add_argument(
        "--audiohook",
        action="store_true",
        help="also print the key's Genesys AudioHook client secret (a telephony key; line 2)",
    )
    add_client_args(p)
    p.set_defaults(func=credentials)
    p = c.add_parser("twilio-token", help="set the tenant's Twilio auth token (read from stdin or a file)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--token-file", type=Path, help="a file holding the token (default: one line of stdin)")
    add_client_args(p)
    p.set_defaults(func=credentials)
    p = c.add_parser("map-cert", help="map a client certificate's SAN (URI or DNS name) to a principal")
    grant(p)
    p.add_argument("--subject", required=True, help="e.g. spiffe://acme.example/ivr or ivr.acme.example")
    add_client_args(p)
    p.set_defaults(func=credentials)
    p = c.add_parser("list", help="a tenant's credentials (never their keys)")
    p.add_argument("--tenant", default="")
    add_client_args(p)
    p.set_defaults(func=credentials)
    p = c.add_parser("revoke", help="revoke a credential: refused from the next request on")
    p.add_argument("--tenant", default="")
    p.add_argument("id")
    add_yes_arg(p)
    add_client_args(p)
    p.set_defaults(func=credentials)
