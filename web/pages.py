"""The customer shop (``/``) and the operator dashboard (``/operator``).

Server-rendered HTML with a little JavaScript (``web/static``); the pages talk
to the JSON API with the user's access token and watch orders over Socket.IO.
The Socket.IO client is the npm package ``socket.io-client``, installed by
``./run.sh`` into ``node_modules`` and served from here, never from a CDN.
"""
from __future__ import annotations

from flask import Blueprint, render_template, send_from_directory

from config import get_settings
from config.settings import REPO_ROOT
from web.errors import problem

bp = Blueprint("pages", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")
VENDOR = REPO_ROOT / "node_modules" / "socket.io-client" / "dist"
SOCKET_IO_CLIENT = "socket.io.min.js"


@bp.get("/")
def shop():
    """The customer page: catalog, cart, orders and their live timelines."""
    return render_template("shop.html")


@bp.get("/operator")
def operator_dashboard():
    """The operator page: live feed, counts, stuck sagas, stock alerts, Flower."""
    return render_template("operator.html", flower_url=get_settings().flower_url)


@bp.get("/vendor/socket.io.min.js")
def socket_io_client():
    """The Socket.IO browser client from node_modules (503 until ``npm ci`` has run)."""
    if not (VENDOR / SOCKET_IO_CLIENT).exists():
        return problem(503, "the socket.io-client package is not installed; run ./run.sh "
                            "(it runs npm ci) or npm ci in the repository")
    return send_from_directory(VENDOR, SOCKET_IO_CLIENT, mimetype="text/javascript")
