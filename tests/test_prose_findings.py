"""The document against itself (no lab): prose that points at configuration, a section or a command that none of
the runbook's blocks contains is a finding citing both places; prose that points at what a block has is not."""

from __future__ import annotations

from pathlib import Path

from harness.findings.prose import prose_points_at_nothing

SITE = """Step 3: Nginx
-------------

Open the site file:

    sudo nano /etc/nginx/sites-available/app

Add the following configuration:

```
server {
    location ~ ^/v1/database/[^/]+/subscribe$ {
        proxy_pass http://localhost:3000;
    }
    # Uncomment to allow sql
    # location ~ ^/v1/[^/]+/sql$ {
    #     proxy_pass http://localhost:3000;
    # }
    location / {
        deny all;
    }
}
```

Step 5: Use it
--------------

    spacetime server add self-hosted --url https://example.com

"""


def _findings(tmp_path: Path, prose: str) -> list[str]:
    path = tmp_path / "rb.md"
    path.write_text(SITE + prose + "\n")
    return [f.summary for f in prose_points_at_nothing(path)]


def test_a_sentence_about_a_location_no_block_has_cites_both_places(tmp_path: Path) -> None:
    found = _findings(tmp_path, "If you have uncommented the `/v1/publish` restriction in Step 3 you cannot publish.")
    assert len(found) == 1 and "refers to `/v1/publish` in Step 3, but Step 3 (line 1) has no location" in found[0]
    # the same sentence about a route a (commented) location does cover: nothing to say
    assert _findings(tmp_path, "If you have uncommented the `/v1/db/sql` restriction in Step 3 you can query.") == []
    assert _findings(tmp_path, "Clients use `/v1/database/<database-name>/subscribe`.") == []


def test_a_command_no_block_shows_and_a_missing_section(tmp_path: Path) -> None:
    found = _findings(tmp_path, "Then run a known `spacetime sql ...` query, as shown in Step 9.")
    assert any("`spacetime sql ...`, and no block of the runbook shows `spacetime sql`" in f for f in found)
    assert any("points at Step 9, and no heading of the runbook is Step 9" in f for f in found)
    # a command a block does show, and a program the runbook never runs: nothing
    assert _findings(tmp_path, "Run `spacetime server add <name>` again, or `kubectl apply` if you like.") == []


def test_the_shared_runbook_points_at_a_publish_restriction_its_site_does_not_have() -> None:
    from tests.conftest import shared_runbook

    found = [f.summary for f in prose_points_at_nothing(shared_runbook())]
    assert any("`/v1/publish` in Step 3" in f for f in found), found
