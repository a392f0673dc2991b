"""The HTTP layer: blueprints that translate requests and responses, and what every route
shares (authentication, the error envelope, activity IDs, JSON in and out, the OpenAPI document).

Nothing here runs SQL; it calls the data layer (``flexsvc.data``) and the rules (``flexsvc.rules``).
"""
