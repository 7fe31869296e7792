"""The prompt registry: templating, versions, labels, diffs, prompt files, change webhooks.

Importing this package loads nothing heavy: the SDK uses :mod:`keel.prompts.template` alone,
the server and CLI use :mod:`keel.prompts.registry` on top of a store.
"""
