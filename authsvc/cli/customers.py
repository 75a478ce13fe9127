"""`authsvc customers list | show | delete | unlock`: a tenant's customers and their enrollment
status (methods chosen, opt-out, templates per modality, voice enrollment, active factors)."""

from __future__ import annotations

import argparse

from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc
from authsvc.cli.client import EXIT_NEGATIVE, EXIT_OK, add_client_args, add_yes_arg, channel, confirm
from authsvc.cli.output import CUSTOMER_COLUMNS, customer_doc, customer_lines, customer_row, emit, table

PAGE = 500


def list_customers(args: argparse.Namespace) -> int:
    found = []
    with channel(args) as ch:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(ch)
        token = ""
        while True:
            page = stub.ListCustomers(
                enrollment_pb2.ListCustomersRequest(tenant=args.tenant, page_size=PAGE, page_token=token),
                timeout=args.timeout,
            )
            found += page.customers
            token = page.next_page_token
            if not token:
                break
    emit(
        args,
        {"tenant": args.tenant, "customers": [customer_doc(c) for c in found]},
        table(CUSTOMER_COLUMNS, [customer_row(c) for c in found]),
    )
    return EXIT_OK


def show_customer(args: argparse.Namespace) -> int:
    with channel(args) as ch:
        c = enrollment_pb2_grpc.EnrollmentServiceStub(ch).GetCustomer(
            enrollment_pb2.GetCustomerRequest(tenant=args.tenant, customer_id=args.customer),
            timeout=args.timeout,
        )
    emit(args, customer_doc(c), customer_lines(c))
    return EXIT_OK


def delete_customer(args: argparse.Namespace) -> int:
    who = f"{args.tenant}/{args.customer}"
    if not confirm(args, f"erase {who} with every template and second-factor secret of theirs"):
        return EXIT_NEGATIVE
    with channel(args) as ch:
        reply = enrollment_pb2_grpc.EnrollmentServiceStub(ch).DeleteCustomer(
            enrollment_pb2.DeleteCustomerRequest(tenant=args.tenant, customer_id=args.customer),
            timeout=args.timeout,
        )
    emit(
        args,
        {
            "tenant": args.tenant,
            "customer_id": args.customer,
            "deleted": True,
            "templates_deleted": reply.templates_deleted,
            "secrets_deleted": reply.secrets_deleted,
        },
        f"deleted {who} ({reply.templates_deleted} template(s), {reply.secrets_deleted} secret(s))",
    )
    return EXIT_OK


def unlock_customer(args: argparse.Namespace) -> int:
    with channel(args) as ch:
        cleared = list(
            enrollment_pb2_grpc.EnrollmentServiceStub(ch)
            .UnlockCustomer(
                enrollment_pb2.UnlockCustomerRequest(tenant=args.tenant, customer_id=args.customer),
                timeout=args.timeout,
            )
            .factors
        )
    state = f"unlocked ({', '.join(cleared)})" if cleared else "was not locked"
    emit(
        args,
        {"tenant": args.tenant, "customer_id": args.customer, "cleared": cleared},
        f"{args.tenant}/{args.customer}: {state}",
    )
    return EXIT_OK


def add_customers_commands(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """-> the `customers` subcommands, for commands that live in modules of their own (a data
    retention `customers expire`, say: add_parser on what this returns)."""
    customers = sub.add_parser("customers", help="a tenant's customers and their enrollment status")
    actions = customers.add_subparsers(dest="action", required=True)

    def command(name: str, text: str, func, customer: bool = True) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=text)
        p.add_argument("--tenant", required=True)
        if customer:
            p.add_argument("--customer", required=True)
        add_client_args(p)
        p.set_defaults(func=func)
        return p

    command(
        "list",
        "the tenant's customers: methods, voice enrollment, templates, active factors",
        list_customers,
        customer=False,
    )
    command("show", "one customer's enrollment status", show_customer)
    add_yes_arg(command("delete", "erase a customer, every template and factor secret", delete_customer))
    command("unlock", "clear a customer's lockouts (after checking who they are)", unlock_customer)
    return actions
