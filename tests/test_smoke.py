from tests.conftest import KEY


def test_enable_status_roundtrip(cli, memory_keyring):
    r = cli("integrations", "segment", "enable", "--write-key-stdin", input=KEY + "\n")
    assert r.exit_code == 0, r.output
    assert memory_keyring.items[("avsb", "segment:default")] == KEY
    r = cli("integrations", "segment", "status", "--json")
    doc = r.json()
    assert doc["enabled"] is True and doc["mode"] == "write-key"
    assert doc["key_masked"] == "…" + KEY[-4:]
    assert KEY not in r.output


def test_test_event_reaches_fake_segment(cli, segment):
    cli("integrations", "segment", "enable", "--write-key", KEY)
    r = cli("segment", "test-event", "--json")
    assert r.exit_code == 0, r.output
    assert len(segment.events) == 1
    assert segment.events[0]["event"] == "avsb_experiment"
