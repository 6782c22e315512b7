"""Reachability checks for the production configuration's services, made before any work.

Left to themselves, MLflow retries an unreachable PostgreSQL for about two minutes and
Feast's Redis client fails deep in a traceback; these checks answer within seconds with
one line naming the service and its address.
"""

from __future__ import annotations

from newsfeed.errors import first_line, ServiceUnreachable

TIMEOUT_SECONDS = 3


def check_postgres(url: str, service: str) -> None:
    """Connect to the PostgreSQL database of an SQLAlchemy-style ``url`` and close again."""
    import psycopg2
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"
    try:
        psycopg2.connect(host=parsed.host, port=parsed.port, dbname=parsed.database, user=parsed.username,
                         password=parsed.password, connect_timeout=TIMEOUT_SECONDS).close()
    except psycopg2.Error as err:
        reason = first_line(err)
        raise ServiceUnreachable(f"cannot reach {service} (PostgreSQL) at {where}: {reason}") from None


def check_redis(connection_string: str, service: str = "the online store") -> None:
    """PING the Redis of a Feast connection string (``host:port[,password=...,ssl=true]``)."""
    import redis

    address, *options = connection_string.split(",")
    host, _, port = address.partition(":")
    settings = dict(option.split("=", 1) for option in options if "=" in option)
    client = redis.Redis(host=host or "localhost", port=int(port or 6379), password=settings.get("password"),
                         ssl=settings.get("ssl", "").lower() == "true", socket_connect_timeout=TIMEOUT_SECONDS,
                         socket_timeout=TIMEOUT_SECONDS)
    try:
        client.ping()
    except redis.RedisError as err:
        raise ServiceUnreachable(f"cannot reach {service} (Redis) at {address}: {err}") from None
    finally:
        client.close()
