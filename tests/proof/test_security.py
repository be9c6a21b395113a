"""Secrets stay secret: a real `service serve` is asked a varied set of questions, and every
response body, every header and every log line is scanned for what must never be there.

Never anywhere: a configured token, a wrong token a caller sent, a plaintext password, an
argon2 hash. Never in a response to a caller without a valid token: a private attribute's
value (the users' email addresses), unless that caller typed the value into its own request.

Then timing: a wrong token and a missing token on a write are both a 401 with the same body,
and their median latencies agree within a small bound.
"""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from tests.ops.conftest import asyncpg_dsn, serve_settings
from tests.ops.servers import Served, serve
from tests.proof.conftest import proof_database

TOKENS = (f"proof-a-{secrets.token_hex(12)}", f"proof-b-{secrets.token_hex(12)}")
WRONG_TOKENS = (
    f"proof-x-{secrets.token_hex(12)}",  # same shape, wrong
    TOKENS[0][:-1] + ("0" if TOKENS[0][-1] != "0" else "1"),  # one character off
    TOKENS[1][: len(TOKENS[1]) // 2],  # a prefix of a valid one
    "proof-" + "\u00e9" * 8,  # non-ASCII
)
PASSWORD = f"plain-{secrets.token_hex(10)}"
SECOND_PASSWORD = f"plain-{secrets.token_hex(10)}"
REFUSED_PASSWORD = f"plain-{secrets.token_hex(10)}"  # only ever sent with a bad token or body
FAKE_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$ZmFrZWhhc2hmYWtlaGFzaA"
TIMING_ROUNDS = 300


@dataclass
class Exchange:
    """One request as sent and its response as received."""

    label: str
    caller: str  # "token", "anonymous" or "wrong-token"
    sent: str  # the URL and body, to tell a caller's own input from a leak
    response: httpx.Response

    @property
    def privileged(self) -> bool:
        return self.caller == "token"

    def texts(self) -> Iterator[tuple[str, str]]:
        yield "body", self.response.text
        for name, value in self.response.headers.multi_items():
            yield f"header {name}", f"{name}: {value}"


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Served, str]]:
    """`service serve` over PostgreSQL with two tokens, logging at DEBUG (the most it says)."""
    log_dir = tmp_path_factory.mktemp("security-logs")
    async with proof_database() as (_name, url):
        settings = serve_settings(
            url,
            api_tokens=",".join(TOKENS),
            log_level="DEBUG",
            cache_url="memory://",
            argon2_memory_kib="8192",
            argon2_time_cost="1",
        )
        with serve(settings, log_dir=log_dir, name="security") as server:
            yield server, url


def bearer(token: str) -> dict[bytes, bytes]:
    """The header as a client would send it: UTF-8 when the token is not ASCII."""
    return {b"Authorization": f"Bearer {token}".encode()}


def as_received(token: str) -> str:
    """How a server that reads headers as latin-1 (ASGI) would spell a UTF-8 token."""
    return token.encode().decode("latin-1")


class Session:
    """Sends requests and keeps every exchange for the scan."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.exchanges: list[Exchange] = []

    async def send(
        self,
        label: str,
        method: str,
        url: str,
        *,
        caller: str = "anonymous",
        token: str | None = None,
        headers: dict[bytes, bytes] | None = None,
        json: object = None,
        status: int | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers.update(bearer(token))
        response = await self.http.request(method, url, headers=all_headers, json=json)
        self.exchanges.append(Exchange(label, caller, f"{url} {json!r}", response))
        if status is not None:
            assert response.status_code == status, (label, response.text[:300])
        return response


async def exercise(session: Session, known_email: str) -> list[int]:
    """Reads and writes of every kind, by every kind of caller. Returns the ids it created."""
    send = session.send
    anonymous_reads = [
        "/users",
        "/users?limit=500&count=true",
        "/users/1",
        "/users/1?include=groups.users",
        "/groups?include=users,permissions&limit=50",
        "/groups/1/users?limit=200",
        "/permissions?include=groups.users&limit=50",
        "/users?filter[groups.name]=admins&include=groups",
    ]
    # Token holders first, so the cache holds private entries when the anonymous reads come.
    for url in anonymous_reads:
        await send(f"token {url}", "GET", url, caller="token", token=TOKENS[0], status=200)
    await send(
        "token private fields",
        "GET",
        "/users?fields=id,email_address&sort=email_address&limit=500",
        caller="token",
        token=TOKENS[1],
        status=200,
    )
    for url in anonymous_reads:
        await send(f"anonymous {url}", "GET", url, status=200)
    for url in (
        "/users?fields=id,email_address",
        "/users/1?fields=email_address",
        "/users?sort=email_address",
        "/users?filter[email_address][startswith]=a",
        "/users?filter[email_address][contains]=example",
        "/users?include=groups.users&fields[groups.users]=email_address",
    ):
        await send(f"anonymous private {url}", "GET", url, status=403)
    # Whether an address exists must not show: both answers are the same 403.
    hit = await send("oracle hit", "GET", f"/users?filter[email_address]={known_email}")
    miss = await send("oracle miss", "GET", "/users?filter[email_address]=nobody@nowhere.test")
    assert hit.status_code == miss.status_code == 403
    assert hit.json()["detail"] == miss.json()["detail"]
    # Tokens where they do not belong: in the query string, with a wrong scheme, wrong ones.
    await send("token in the query", "GET", f"/users?access_token={TOKENS[0]}", status=400)
    for wrong in WRONG_TOKENS:
        await send(
            "wrong token read", "GET", "/users", caller="wrong-token", token=wrong, status=401
        )
    basic = base64.b64encode(f"admin:{TOKENS[0]}".encode()).decode()
    await send(
        "basic scheme",
        "GET",
        "/users",
        caller="wrong-token",
        headers={b"Authorization": f"Basic {basic}".encode()},
        status=401,
    )
    await send(
        "token without scheme",
        "GET",
        "/users",
        caller="wrong-token",
        headers={b"Authorization": TOKENS[0].encode()},
        status=401,
    )
    # Writes with passwords: accepted, refused for the token, refused for the body.
    created = await send(
        "create with password",
        "POST",
        "/users",
        caller="token",
        token=TOKENS[0],
        json={"name": "sec_one", "email_address": "sec.one@proof.test", "password": PASSWORD},
        status=201,
    )
    batch = await send(
        "batch with passwords",
        "POST",
        "/users?fields=id,name,email_address",
        caller="token",
        token=TOKENS[1],
        json=[
            {"name": "sec_two", "email_address": "sec.two@proof.test", "password": PASSWORD},
            {"name": "sec_three", "email_address": "sec.3@proof.test", "password": PASSWORD},
        ],
        status=201,
    )
    ids = [created.json()["data"]["id"], *(row["id"] for row in batch.json()["data"])]
    await send(
        "change password",
        "PATCH",
        f"/users/{ids[0]}?include=groups",
        caller="token",
        token=TOKENS[0],
        json={"password": SECOND_PASSWORD, "group_ids": [1]},
        status=200,
    )
    callers: tuple[str | None, ...] = (None, WRONG_TOKENS[0], WRONG_TOKENS[1])
    for presented in callers:
        await send(
            "password write without a valid token",
            "PATCH",
            f"/users/{ids[0]}",
            caller="anonymous" if presented is None else "wrong-token",
            token=presented,
            json={"password": REFUSED_PASSWORD},
            status=401,
        )
    refused_bodies = [
        ({"name": "sec_one", "email_address": "dup@proof.test", "password": REFUSED_PASSWORD}, 409),
        ({"name": "sec_bad", "email_address": "not-an-email", "password": REFUSED_PASSWORD}, 422),
        (
            {
                "name": "sec_long",
                "email_address": "l@proof.test",
                "password": REFUSED_PASSWORD + "\x00",
            },
            422,
        ),
        ({"name": "sec_type", "email_address": "t@proof.test", "password": 12345678}, 422),
        ({"name": "sec_hash", "email_address": "h@proof.test", "password_hash": FAKE_HASH}, 422),
        (
            {
                "name": "sec_pw",
                "email_address": "p@proof.test",
                "password": REFUSED_PASSWORD,
                "id": 1,
            },
            422,
        ),
    ]
    for body, status in refused_bodies:
        await send(
            f"refused body {status}",
            "POST",
            "/users",
            caller="token",
            token=TOKENS[0],
            json=body,
            status=status,
        )
    await send(
        "clash in a batch",
        "POST",
        "/users",
        caller="token",
        token=TOKENS[0],
        json=[
            {
                "name": "sec_four",
                "email_address": "sec.two@proof.test",
                "password": REFUSED_PASSWORD,
            }
        ],
        status=409,
    )
    # The created users, read by every kind of caller.
    for user_id in ids:
        url = f"/users/{user_id}?include=groups"
        await send("token reads created", "GET", url, caller="token", token=TOKENS[1], status=200)
        await send("anonymous reads created", "GET", url, status=200)
    await send("anonymous created list", "GET", "/users?sort=-id&limit=5", status=200)
    await send("delete", "DELETE", f"/users/{ids[2]}", caller="token", token=TOKENS[0], status=204)
    await send("delete anonymous", "DELETE", f"/users/{ids[1]}", status=401)
    # Errors and the service's own pages.
    await send("not found", "GET", "/users/999999", status=404)
    await send("no route", "GET", "/nope", status=404)
    await send("wrong method", "PUT", "/users/1", status=405)
    await send("bad parameter", "GET", "/users?fields=nmae", status=400)
    await send("bad cursor", "GET", "/users?cursor=abc", status=400)
    for url in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        await send(f"page {url}", "GET", url, status=200)
    return ids


async def stored_secrets(url: str) -> tuple[list[str], list[str]]:
    """(every email address, every password hash) now in the database."""
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=5)
    try:
        emails = [row[0] for row in await connection.fetch("SELECT email_address FROM auth_user")]
        hashes = [
            row[0]
            for row in await connection.fetch(
                "SELECT password FROM auth_user WHERE password IS NOT NULL"
            )
        ]
    finally:
        await connection.close()
    return emails, hashes


def find_leaks(
    exchanges: list[Exchange], log: str, *, never: dict[str, str], private: list[str]
) -> list[str]:
    """Every place a forbidden string shows up, described."""
    leaks = []
    for exchange in exchanges:
        for where, text in exchange.texts():
            for name, secret in never.items():
                if secret in text:
                    leaks.append(f"{name} in the {where} of {exchange.label!r}")
            if exchange.privileged:
                continue
            for email in private:
                if email in text and email not in exchange.sent:
                    leaks.append(f"email {email} in the {where} of {exchange.label!r}")
    for number, line in enumerate(log.splitlines(), 1):
        for name, secret in never.items():
            if secret in line:
                leaks.append(f"{name} in log line {number}: {line[:200]}")
    return leaks


async def test_no_token_hash_password_or_private_value_escapes(
    secured: tuple[Served, str], capsys: pytest.CaptureFixture[str]
) -> None:
    server, url = secured
    async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as http:
        session = Session(http)
        await exercise(session, known_email="alice@example.com")
    emails, hashes = await stored_secrets(url)
    assert len(hashes) >= 2, hashes
    assert all(h.startswith("$argon2id$") for h in hashes), hashes
    assert "alice@example.com" in emails
    never = {f"token {i}": token for i, token in enumerate(TOKENS)}
    never |= {f"wrong token {i}": token for i, token in enumerate(WRONG_TOKENS)}
    never |= {f"wrong token {i} as latin-1": as_received(t) for i, t in enumerate(WRONG_TOKENS)}
    never |= {"password": PASSWORD, "second password": SECOND_PASSWORD}
    never |= {"refused password": REFUSED_PASSWORD, "argon2 marker": "$argon2"}
    never |= {f"stored hash {i}": stored for i, stored in enumerate(hashes)}
    private = sorted(set(emails) | {"sec.two@proof.test", "sec.3@proof.test"})
    await asyncio.sleep(0.2)  # the last request's log line is written after its response
    log = server.log_text()
    leaks = find_leaks(session.exchanges, log, never=never, private=private)
    with capsys.disabled():
        print(
            f"\n[security] scanned {len(session.exchanges)} responses and "
            f"{len(log.splitlines())} log lines for {len(never)} secrets and "
            f"{len(private)} private values: {len(leaks)} leaks"
        )
    assert leaks == [], "\n".join(leaks[:30])
    request_lines = [line for line in log.splitlines() if '"service.requests"' in line]
    assert len(request_lines) >= len(session.exchanges), "the log missed requests"
    anonymous = [e for e in session.exchanges if not e.privileged]
    assert len(anonymous) >= 20
    assert any("email_address" in e.response.text for e in session.exchanges if e.privileged)


def _timed_401s(base_url: str) -> dict[str, list[float]]:
    """Interleaved POSTs with no token, a wrong token and a near-miss; milliseconds each."""
    kinds: dict[str, dict[bytes, bytes]] = {
        "missing": {},
        "wrong": bearer(WRONG_TOKENS[0]),
        "near-miss": bearer(WRONG_TOKENS[1]),
    }
    order = [kind for kind in kinds for _ in range(TIMING_ROUNDS)]
    random.Random(20240601).shuffle(order)
    body = b'{"name": "timing", "email_address": "timing@proof.test"}'
    timings: dict[str, list[float]] = {kind: [] for kind in kinds}
    first: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        for kind in list(kinds) * 20:  # warm-up: connection, routes, the verifier
            http.post(
                "/users",
                content=body,
                headers={**kinds[kind], b"Content-Type": b"application/json"},
            )
        for kind in order:
            headers = {**kinds[kind], b"Content-Type": b"application/json"}
            started = time.perf_counter()
            response = http.post("/users", content=body, headers=headers)
            timings[kind].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 401, response.text
            first.setdefault(kind, response)
    bodies = {kind: response.content for kind, response in first.items()}
    assert len(set(bodies.values())) == 1, bodies  # one problem, whatever was wrong
    challenges = {kind: response.headers["www-authenticate"] for kind, response in first.items()}
    assert len(set(challenges.values())) == 1, challenges
    return timings


async def test_a_wrong_token_and_a_missing_token_take_the_same_time(
    secured: tuple[Served, str], capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = secured
    timings = await asyncio.to_thread(_timed_401s, server.url)
    medians = {kind: statistics.median(values) for kind, values in timings.items()}
    spread = {
        kind: (statistics.quantiles(values, n=4)[0], statistics.quantiles(values, n=4)[2])
        for kind, values in timings.items()
    }
    with capsys.disabled():
        print(
            "\n[security] 401 latency over "
            f"{TIMING_ROUNDS} interleaved requests each: "
            + ", ".join(
                f"{kind} median {medians[kind]:.3f} ms (IQR {spread[kind][0]:.3f}-"
                f"{spread[kind][1]:.3f})"
                for kind in medians
            )
        )
    # The verifier's extra work for a presented token is one SHA-256 of a short string and a
    # constant-time compare per configured token: about a microsecond. Over loopback HTTP on a
    # shared machine a request takes around a millisecond with jitter of tenths of one, so
    # "indistinguishable" is asserted as medians within 20% or 0.5 ms, whichever is larger:
    # an early-exit comparison or a lookup that touched the database would break either.
    log = server.log_text()
    assert not any(token in log for token in (*TOKENS, *WRONG_TOKENS))
    baseline = medians["missing"]
    bound = max(0.2 * baseline, 0.5)
    for kind in ("wrong", "near-miss"):
        assert abs(medians[kind] - baseline) < bound, (kind, medians, bound)


def test_the_scan_finds_what_it_looks_for() -> None:
    """A planted token, hash and address are each reported, so a clean scan means something."""
    request = httpx.Request("GET", "http://proof/users")
    leaky = httpx.Response(
        200,
        headers={"X-Debug": TOKENS[0]},
        text='{"email_address": "alice@example.com", "p": "$argon2id$x"}',
        request=request,
    )
    exchanges = [
        Exchange("anonymous", "anonymous", "/users None", leaky),
        Exchange("token", "token", "/users None", leaky),
        Exchange("own input", "anonymous", "/users?filter[email_address]=alice@example.com", leaky),
    ]
    never = {"token": TOKENS[0], "argon2 marker": "$argon2"}
    leaks = find_leaks(
        exchanges,
        f"line\n{PASSWORD}\n",
        never={**never, "pw": PASSWORD},
        private=["alice@example.com"],
    )
    assert "email alice@example.com in the body of 'anonymous'" in leaks
    assert not any("email" in leak and "'token'" in leak for leak in leaks)
    assert not any("email" in leak and "own input" in leak for leak in leaks)
    assert "token in the header x-debug of 'anonymous'" in leaks
    assert "argon2 marker in the body of 'token'" in leaks
    assert any(leak.startswith("pw in log line 2") for leak in leaks)
