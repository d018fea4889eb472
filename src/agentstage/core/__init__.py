"""The agent core: messages, events, the model and tool protocols, prompts and orchestrators.

It imports only the standard library, pydantic, jinja2 (sandboxed prompt templates) and
``agentstage.errors`` / ``agentstage.types``, so it can be embedded anywhere.
"""
