#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: the firewall role's preflight (addresses, ports, the controller's SSH access)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: firewall_check
short_description: Check the firewall role's variables and that the controller keeps SSH access
description:
  - Changes nothing; check mode safe. Fails with a message naming the variable.
  - Every address in C(ssh_from) and in each C(allow) entry's C(from) must be an IPv4 or IPv6
    address or network in CIDR notation without host bits (10.0.0.0/8, not 10.0.0.1/8), and no
    entry of one list may lie inside another (nftables refuses overlapping elements of a set).
  - Each C(allow) entry needs a port 1-65535, a protocol tcp or udp, at least one source, and a
    comment of at most 128 characters without double quotes.
  - The controller's address and the SSH port it reached are read from the environment of the
    module (C(SSH_CONNECTION), else C(SSH_CLIENT)); run it without privilege escalation, since
    sudo drops these variables. When they are set and C(check_client) is true, the port must be
    C(ssh_port) and, when C(ssh_from) is not empty, the address must lie in one of its networks.
    Without them (a local or container connection) only the variables are checked.
options:
  ssh_port:
    description: The SSH port the firewall opens (firewall_ssh_port).
    type: int
    required: true
  ssh_from:
    description: Networks SSH is allowed from (firewall_ssh_from); empty means any address.
    type: list
    elements: str
    default: []
  allow:
    description: Extra rules (firewall_allow), each C(port), C(proto), C(from), C(comment).
    type: list
    elements: dict
    default: []
  check_client:
    description: Check the controller's own SSH connection (firewall_ssh_lockout_check).
    type: bool
    default: true
author: LLM bundle team (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Check the firewall keeps the controller's SSH access
  firewall_check:
    ssh_port: "{{ firewall_ssh_port }}"
    ssh_from: "{{ firewall_ssh_from }}"
    allow: "{{ firewall_allow }}"
  become: false
"""

RETURN = r"""
client:
  description: The controller's address as the host sees it; empty without an SSH connection.
  returned: always
  type: str
client_port:
  description: The host's port the controller's SSH connection reached; 0 without one.
  returned: always
  type: int
covered:
  description: Whether firewall_ssh_from lets the controller's address in (true when it is
    empty); null without an SSH connection.
  returned: always
  type: bool
"""

import ipaddress
import os

from ansible.module_utils.basic import AnsibleModule

#: nftables keeps at most this many bytes of a rule comment (NFTNL_UDATA_COMMENT_MAXLEN).
COMMENT_MAX = 128


class CheckError(Exception):
    """A variable is wrong or the controller would be locked out; the text says what to change."""


def networks(values, name):
    """Parse a list of addresses/networks; refuse host bits, duplicates and overlaps."""
    nets = []
    for value in values:
        net = _network(value, name)
        for other in nets:
            if net.version == other.version and (net.subnet_of(other) or other.subnet_of(net)):
                raise CheckError("%s: %s and %s overlap; nftables refuses overlapping elements "
                                 "of a set: keep the larger one" % (name, other, net))
        nets.append(net)
    return nets


def _network(value, name):
    text = str(value).strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        error = str(exc)
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise CheckError("%s: %r is not an IPv4 or IPv6 address or network (%s)"
                         % (name, value, error)) from None
    raise CheckError("%s: %r has host bits set: write %s" % (name, value, loose))


def check_allow(rules):
    for index, rule in enumerate(rules):
        name = "firewall_allow[%d]" % index
        port = rule.get("port")
        try:
            port_ok = not isinstance(port, bool) and 1 <= int(port) <= 65535
        except (TypeError, ValueError):
            port_ok = False
        if not port_ok:
            raise CheckError("%s: port must be 1-65535, got %r" % (name, port))
        proto = rule.get("proto", "tcp")
        if proto not in ("tcp", "udp"):
            raise CheckError("%s (port %s): proto must be tcp or udp, got %r" % (name, port, proto))
        sources = rule.get("from")
        if not isinstance(sources, list) or not sources:
            raise CheckError("%s (port %s): from must list at least one address or network "
                             "(0.0.0.0/0 and ::/0 for any)" % (name, port))
        networks(sources, "%s (port %s) from" % (name, port))
        comment = str(rule.get("comment") or "")
        if '"' in comment or "\n" in comment or len(comment.encode("utf-8")) > COMMENT_MAX:
            raise CheckError("%s (port %s): comment must be one line of at most %d bytes without "
                             "double quotes" % (name, port, COMMENT_MAX))


def ssh_client(environ):
    """(address, host port) of this SSH session from sshd's variables, or ("", 0)."""
    conn = environ.get("SSH_CONNECTION", "").split()
    if len(conn) == 4:
        address, port = conn[0], conn[3]
    else:
        client = environ.get("SSH_CLIENT", "").split()
        if len(client) != 3:
            return "", 0
        address, port = client[0], client[2]
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        port = int(port)
    except ValueError:
        return "", 0
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), port


def check(ssh_port, ssh_from, allow, check_client, environ):
    """Returns {client, client_port, covered}; raises CheckError."""
    if not 1 <= ssh_port <= 65535:
        raise CheckError("firewall_ssh_port must be 1-65535, got %s" % ssh_port)
    ssh_nets = networks(ssh_from, "firewall_ssh_from")
    check_allow(allow)
    address, port = ssh_client(environ)
    if not address:
        return {"client": "", "client_port": 0, "covered": None}
    ip = ipaddress.ip_address(address)
    covered = not ssh_nets or any(ip.version == n.version and ip in n for n in ssh_nets)
    if check_client:
        if port != ssh_port:
            raise CheckError(
                "the controller reaches SSH on port %d of this host but firewall_ssh_port is %d: "
                "the firewall would lock it out. Set firewall_ssh_port: %d (or "
                "firewall_ssh_lockout_check: false if this connection is not the way in you keep)"
                % (port, ssh_port, port))
        if not covered:
            raise CheckError(
                "the controller connects from %s, which is not in firewall_ssh_from (%s): the "
                "firewall would lock it out. Add %s (or its network) to firewall_ssh_from (or set "
                "firewall_ssh_lockout_check: false if this address is not the way in you keep)"
                % (address, ", ".join(str(n) for n in ssh_nets), address))
    return {"client": address, "client_port": port, "covered": covered}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ssh_port=dict(type="int", required=True),
            ssh_from=dict(type="list", elements="str", default=[]),
            allow=dict(type="list", elements="dict", default=[]),
            check_client=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = check(p["ssh_port"], p["ssh_from"], p["allow"], p["check_client"], os.environ)
    except CheckError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
