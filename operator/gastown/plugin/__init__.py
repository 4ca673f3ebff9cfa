"""`kubectl gastown`: a kubectl plugin to look at and feed a town (tree, why, sling, status).

Layering: `state`, `tree`, `why`, `status`, `sling` and `style` are pure (parsed models in, text
or JSON-able dicts out, no I/O, `now` passed in); `fetch` reads objects through
`gastown.kube.rest.RestClient`; `main` is the thin command layer (arguments, output, errors).
"""
