"""`POST /token`: PTG's OAuth2 password login, against the operator's users file only.

Answers `{"access_token", "token_type": "bearer"}` and sets the cookie
`authorization="Bearer <jwt>"` (httponly, SameSite=Lax) as PTG does. The optional query `exp`
asks for a shorter lifetime in seconds; it never exceeds `STREAMS_TOKEN_TTL_S`.
"""

import asyncio

from aiohttp import web

from services.common.auth import mint_token
from services.common.errors import BadRequest, Unauthorized
from services.common.web import json_errors

from .keys import settings_key
from .users import UsersFile

users_file_key = web.AppKey("users_file", UsersFile)
_hashing_key = web.AppKey("login_hashing", asyncio.Semaphore)
MAX_FORM_BYTES = 16 * 1024


def setup(app: web.Application) -> None:
    app[users_file_key] = UsersFile(app[settings_key].users_file)
    # PBKDF2 is deliberately slow: at most two run at once, off the event loop.
    app[_hashing_key] = asyncio.Semaphore(2)
    app.router.add_post("/token", token)
    app.router.add_post("/token/", token)


@json_errors
async def token(request: web.Request) -> web.Response:
    settings = request.app[settings_key]
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise BadRequest("form too large")
    form = await request.post()
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise BadRequest("form fields 'username' and 'password' are required")
    ttl = settings.token_ttl_s
    if "exp" in request.query:
        try:
            ttl = min(ttl, float(request.query["exp"]))
        except ValueError:
            raise BadRequest("exp must be a number of seconds") from None
        if ttl <= 0:
            raise BadRequest("exp must be positive")
    async with request.app[_hashing_key]:
        ok = await asyncio.to_thread(request.app[users_file_key].verify, username, password)
    if not ok:
        raise Unauthorized("incorrect username or password")
    jwt = mint_token(settings.jwt, {"sub": username}, ttl_s=ttl)
    response = web.json_response({"access_token": jwt, "token_type": "bearer"})
    response.set_cookie(
        "authorization",
        f"Bearer {jwt}",
        max_age=int(ttl),
        httponly=True,
        samesite="Lax",
        secure=settings.cookie_secure,
    )
    return response
