"""Signed webhooks (Standard Webhooks): the API calls a client's URL when its request's status
enters a status the client subscribed to.

- `models`: the subscription a ``POST /api/generate`` carries, the deliveries made of status
  transitions, and the delivery log's entries;
- `signing`: the per-key secrets and the ``webhook-*`` headers;
- `targets`: which URLs and addresses a webhook may reach (no loopback, private, link-local,
  ... addresses: SSRF), at submit and again at every attempt, through a resolver that hands
  the connector only the addresses that passed;
- `config`: the settings as the API uses them, and the master key (set, or kept in the
  status store's ``meta`` table);
- `subscribe`: the submit-time check that turns a body's ``webhook`` into a subscription;
- `sqlite`, `postgres`: the deliveries' table in each status store (enqueue, claim with a
  lease, record, log);
- `deliverer`: claims due deliveries from the status store, sends them, records the outcome
  and schedules retries;
- `routes`: ``GET /api/webhooks/secret`` and ``GET /api/generations/{id}/webhooks``.

Subscriptions and deliveries live in the status store (`listener.api.store`), written in the
transactions that accept a request and that apply the records changing its status, so no
transition is lost or announced twice, whatever restarts.
"""
