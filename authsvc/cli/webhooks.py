"""`authsvc webhooks ...`: where a tenant's call decisions are POSTed (tenant-admin)."""

from __future__ import annotations

import argparse

from authsvc.api.v1 import webhooks_pb2, webhooks_pb2_grpc
from authsvc.cli.client import EXIT_NEGATIVE, EXIT_OK, add_client_args, add_yes_arg, channel, confirm
from authsvc.cli.output import emit, json_mode, note


def run(args: argparse.Namespace) -> int:
    with channel(args) as ch:
        stub = webhooks_pb2_grpc.WebhookServiceStub(ch)
        if args.action == "set":
            reply = stub.SetWebhook(
                webhooks_pb2.SetWebhookRequest(tenant=args.tenant, url=args.url), timeout=args.timeout
            )
            if not json_mode(args):
                note(f"webhook of {args.tenant}: {reply.webhook.url}; its signing secret is shown once:")
            # Shown once, by design: the receiver checks signatures with it.
            emit(
                args, {"tenant": args.tenant, "url": reply.webhook.url, "secret": reply.secret}, reply.secret
            )
        elif args.action == "show":
            w = stub.GetWebhook(webhooks_pb2.GetWebhookRequest(tenant=args.tenant), timeout=args.timeout)
            emit(args, {"tenant": w.tenant, "url": w.url}, f"{w.tenant}\t{w.url}")
        else:
            if not confirm(args, f"delete the webhook of tenant {args.tenant}"):
                return EXIT_NEGATIVE
            reply = stub.DeleteWebhook(
                webhooks_pb2.DeleteWebhookRequest(tenant=args.tenant), timeout=args.timeout
            )
            emit(
                args,
                {"tenant": args.tenant, "deleted": reply.deleted},
                "deleted" if reply.deleted else f"tenant {args.tenant} had no webhook",
            )
    return EXIT_OK


def add_webhook_commands(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("webhooks", help="POST a tenant's call decisions to a URL (signed)").add_subparsers(
        dest="action", required=True
    )
    p = w.add_parser("set", help="set the webhook URL; prints a new signing secret (shown once)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--url", required=True, help="https://HOST/PATH")
    add_client_args(p)
    p.set_defaults(func=run)
    p = w.add_parser("show", help="the tenant's webhook")
    p.add_argument("--tenant", required=True)
    add_client_args(p)
    p.set_defaults(func=run)
    p = w.add_parser("delete", help="stop sending decisions")
    p.add_argument("--tenant", required=True)
    add_yes_arg(p)
    add_client_args(p)
    p.set_defaults(func=run)
