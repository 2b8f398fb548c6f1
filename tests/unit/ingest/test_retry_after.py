"""``Retry-After`` read as RFC 9110 10.2.3 writes it: delay-seconds or an HTTP-date (the IMF
fixdate, and the obsolete RFC 850 and asctime forms recipients must read); anything else is no
wait asked, and the backoff alone applies."""

from __future__ import annotations

import pytest

from reconciler.ingest.fetch import retry_after

NOW = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example date


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0),
    (" 0 ", 0.0),
    ("Sun, 06 Nov 1994 08:50:07 GMT", 30.0),
    ("Sunday, 06-Nov-94 08:50:07 GMT", 30.0),  # RFC 850
    ("Sun Nov  6 08:50:07 1994", 30.0),  # asctime: no zone written, GMT as every HTTP-date
    ("Sun, 06 Nov 1994 08:00:00 GMT", 0.0),  # in the past: no wait
    (None, None),
    ("", None),
    ("-5", None),
    ("1.5", None),
    ("soon", None),
    ("Sun, 31 Feb 1994 08:50:07 GMT", None),
])
def test_retry_after(header, seconds):
    assert retry_after(header, NOW) == seconds
