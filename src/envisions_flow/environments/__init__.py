"""Environments: one protocol (base.Environment), one implementation per domain, and the sandbox and
program interpreters beside the environments that use them.

Kept empty on purpose: the sandbox worker imports `environments.fork_server` and must stay lean.
"""
