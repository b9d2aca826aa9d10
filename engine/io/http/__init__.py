"""Generic HTTP machinery for sources: auth kinds, paginators, a rate limiter and a client.

Nothing in here knows about a particular shop; the mapping's ``http`` block configures it.
"""

from engine.io.http.auth import (Auth, AuthConfigError, BearerAuth, HmacAuth, NoAuth, build_auth,
                   register_auth, registered_auth_kinds)
from engine.io.http.client import (AuthenticationError, HttpClient, HttpConfigError, HttpError, NotFound,
                     RateLimitExceeded, ResponseSignatureError)
from engine.io.http.pagination import (PageRequest, PaginationError, Paginator, build_paginator,
                         register_paginator, registered_paginator_kinds)
from engine.io.http.ratelimit import SlidingWindowLimiter

__all__ = [
    "Auth", "AuthConfigError", "BearerAuth", "HmacAuth", "NoAuth", "build_auth",
    "register_auth", "registered_auth_kinds",
    "AuthenticationError", "HttpClient", "HttpConfigError", "HttpError", "NotFound",
    "RateLimitExceeded", "ResponseSignatureError",
    "PageRequest", "PaginationError", "Paginator", "build_paginator", "register_paginator",
    "registered_paginator_kinds",
    "SlidingWindowLimiter",
]
