from otelbot.core.redaction import redact_path, redact_text, redact_url
from otelbot.instrumentation.botapi import parse_path

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def test_path_keeps_bot_id_and_drops_secret() -> None:
    assert redact_path(f"/bot{TOKEN}/sendMessage") == "/bot123456789:REDACTED/sendMessage"
    # short tokens (local Bot API servers, tests) are redacted in paths too
    assert redact_path("/bot42:x/getMe") == "/bot42:REDACTED/getMe"
    assert redact_path("/bot42%3Axyz/getMe") == "/bot42:REDACTED/getMe"
    assert redact_path("/webhook/path") == "/webhook/path"


def test_text_redacts_tokens_anywhere_and_leaves_times_alone() -> None:
    msg = f"Cannot POST https://api.telegram.org/bot{TOKEN}/sendMessage (token {TOKEN}) at 12:30"
    out = redact_text(msg)
    assert TOKEN.split(":")[1] not in out
    assert out.count("123456789:REDACTED") == 2
    assert out.endswith("at 12:30")


def test_url_scrubs_userinfo_and_credential_query_values() -> None:
    url = f"https://user:pw@api.telegram.org/bot{TOKEN}/getFile?sig=abc&file_id=7"
    out = redact_url(url)
    assert "pw" not in out and "user:" not in out
    assert "sig=REDACTED" in out and "file_id=7" in out
    assert "/bot123456789:REDACTED/getFile" in out


def test_parse_bot_api_paths() -> None:
    t = parse_path(f"/bot{TOKEN}/sendMessage")
    assert t is not None
    assert (t.method, t.bot_id, t.span_name) == (
        "sendMessage",
        "123456789",
        "telegram.api sendMessage",
    )
    assert TOKEN not in repr(t)
    test_env = parse_path(f"/bot{TOKEN}/test/getMe")
    assert test_env is not None and test_env.method == "getMe"
    f = parse_path(f"/file/bot{TOKEN}/photos/file_1.jpg")
    assert f is not None and f.method == "file" and f.template == "/file/bot{token}/{file_path}"
    assert parse_path("/api/users/1") is None
    assert parse_path("/botanic/garden") is None


def test_secret_alone_is_redacted_once_a_token_was_seen() -> None:
    token = "987654321:AAFxq1Wb2Ec3Rd4Tf5Yg6Uh7Ij8Ok9Pl0Zm"
    secret = token.split(":")[1]
    assert redact_path(f"/bot{token}/getMe") == "/bot987654321:REDACTED/getMe"
    for text in (
        f"login with {secret} failed",
        f"https://example.org/hook/{secret}",
        f"percent {token.replace(':', '%3A')} and bare {secret}",
    ):
        out = redact_text(text)
        assert secret not in out, out
        assert "REDACTED" in out
    assert redact_text("nothing secret here 12:30") == "nothing secret here 12:30"
