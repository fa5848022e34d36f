"""The sandbox answers the documented happy path end to end."""


def test_token_then_records(sandbox):
    with sandbox.client() as c:
        r = c.get("/crm/v7/Appointments__s", params={"fields": "Status,Booking_Id", "per_page": 5})
    assert r.status_code == 200
    body = r.json()
    assert len(body["data"]) == 5
    assert body["info"]["more_records"] is True
    assert all(rec["Booking_Id"].startswith("#AN-") for rec in body["data"])


def test_reset_restores_the_seed(sandbox):
    first = next(b for b in sandbox.dump(module="bookings")["bookings"] if b["status"] == "UPCOMING")
    with sandbox.client() as c:
        r = c.post("/bookings/v1/json/updateappointment", data={"booking_id": first["booking_id"], "action": "cancel"})
    assert r.json()["response"]["status"] == "success"
    assert sandbox.dump(booking_id=first["booking_id"])["bookings"][0]["status"] == "CANCEL"
    sandbox.http.post("/__sandbox/reset").raise_for_status()
    assert sandbox.dump(booking_id=first["booking_id"])["bookings"][0] == first
