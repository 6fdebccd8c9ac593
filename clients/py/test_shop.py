"""supabase-py (from PyPI), unchanged, against a real Gatehouse serving the shop:
auth, data with filters and embeds, storage with signed URLs."""

import httpx
import pytest
from storage3.exceptions import StorageApiError
from supabase_auth.errors import AuthApiError

PASSWORD = "correct horse battery staple"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d494844520000000100000001080600000000")


def signed_up(gatehouse, email):
    client = gatehouse.client()
    response = client.auth.sign_up({"email": email, "password": PASSWORD})
    assert response.session is not None
    return client, response.user


def test_auth_sign_up_sign_in_user_refresh_sign_out(gatehouse):
    client, user = signed_up(gatehouse, "py-alice@example.com")
    assert user.email == "py-alice@example.com"

    later = gatehouse.client()
    signed_in = later.auth.sign_in_with_password({"email": "py-alice@example.com", "password": PASSWORD})
    assert signed_in.user.id == user.id
    assert later.auth.get_user().user.id == user.id

    refreshed = later.auth.refresh_session()
    assert refreshed.session.access_token != signed_in.session.access_token
    assert refreshed.session.refresh_token != signed_in.session.refresh_token

    with pytest.raises(AuthApiError) as wrong:
        gatehouse.client().auth.sign_in_with_password({"email": "py-alice@example.com", "password": "not it at all"})
    assert wrong.value.code == "invalid_credentials"

    token = refreshed.session.access_token
    later.auth.sign_out()
    gone = httpx.get(
        f"{gatehouse.url}/auth/v1/user",
        headers={"apikey": gatehouse.publishable_key, "Authorization": f"Bearer {token}"},
    )
    assert gone.status_code == 403, "the session ended with the sign-out"


def test_data_with_filters_embeds_and_row_policies(gatehouse):
    service = gatehouse.client(gatehouse.secret_key)
    products = service.table("products").insert(
        [{"id": 9001, "name": "Teapot", "price_cents": 2500}, {"id": 9002, "name": "Cup", "price_cents": 800}]
    ).execute()
    assert len(products.data) == 2

    bea, _ = signed_up(gatehouse, "py-bea@example.com")
    order = bea.table("orders").insert({"note": "gift", "total_cents": 4100}).execute().data[0]
    assert order["status"] == "pending", "the server sets the status"
    bea.table("order_items").insert(
        [{"id": 7001, "order_id": order["id"], "product_id": 9001, "quantity": 1},
         {"id": 7002, "order_id": order["id"], "product_id": 9002, "quantity": 2}]
    ).execute()

    listed = (
        bea.table("orders")
        .select("id, note, order_items(quantity, products(name))")
        .eq("id", order["id"])
        .execute()
    )
    assert listed.data[0]["note"] == "gift"
    names = sorted(line["products"]["name"] for line in listed.data[0]["order_items"])
    assert names == ["Cup", "Teapot"]

    cheap = bea.table("products").select("name").lt("price_cents", 1000).in_("id", [9001, 9002]).execute()
    assert cheap.data == [{"name": "Cup"}]
    ordered = bea.table("products").select("name").in_("id", [9001, 9002]).order("price_cents", desc=True).execute()
    assert [row["name"] for row in ordered.data] == ["Teapot", "Cup"]

    updated = bea.table("orders").update({"note": "a gift"}).eq("id", order["id"]).execute()
    assert updated.data[0]["note"] == "a gift"

    cal, _ = signed_up(gatehouse, "py-cal@example.com")
    assert cal.table("orders").select("id").eq("id", order["id"]).execute().data == [], "not another's order"
    stolen = cal.table("orders").update({"note": "mine now"}).eq("id", order["id"]).execute()
    assert stolen.data == []
    assert bea.table("orders").select("note").eq("id", order["id"]).execute().data == [{"note": "a gift"}]


def test_storage_upload_list_and_signed_urls(gatehouse):
    service = gatehouse.client(gatehouse.secret_key)
    service.storage.create_bucket("avatars", options={"public": False})

    dee, user = signed_up(gatehouse, "py-dee@example.com")
    avatars = dee.storage.from_("avatars")
    avatars.upload(f"{user.id}/me.png", PNG, {"content-type": "image/png"})
    listed = avatars.list(user.id)
    assert [entry["name"] for entry in listed] == ["me.png"]

    # supabase-py sends expiresIn as a string, as Supabase Storage accepts.
    signed = avatars.create_signed_url(f"{user.id}/me.png", 60)
    fetched = httpx.get(signed["signedURL"])
    assert fetched.status_code == 200
    assert fetched.content == PNG
    many = avatars.create_signed_urls([f"{user.id}/me.png"], 60)
    assert httpx.get(many[0]["signedURL"]).content == PNG

    eve, _ = signed_up(gatehouse, "py-eve@example.com")
    with pytest.raises(StorageApiError):
        eve.storage.from_("avatars").upload(f"{user.id}/evil.png", PNG, {"content-type": "image/png"})
    with pytest.raises(StorageApiError):
        eve.storage.from_("avatars").create_signed_url(f"{user.id}/me.png", 60)
