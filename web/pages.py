"""The customer shop (``/``) and the operator dashboard (``/operator``).

Server-rendered HTML with a little JavaScript (``web/static``); the pages talk
to the JSON API with the user's access token and watch orders over Socket.IO.
The browser libraries are npm packages (``package-lock.json``), installed by
``./run.sh`` into ``node_modules`` and served from ``/vendor/``, never from a CDN.
"""

from __future__ import annotations

from flask import Blueprint, render_template, send_from_directory

from config import get_settings
from config.settings import REPO_ROOT
from models.order import STATUSES
from web.errors import problem

bp = Blueprint(
    "pages", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
)
NODE_MODULES = REPO_ROOT / "node_modules"
# What /vendor/<name> serves: {name: (npm package, directory in it, mimetype)}.
VENDOR = {
    "socket.io.min.js": ("socket.io-client", "dist", "text/javascript"),
    "swagger-ui-bundle.js": ("swagger-ui-dist", ".", "text/javascript"),
    "swagger-ui.css": ("swagger-ui-dist", ".", "text/css"),
    "chart.umd.min.js": ("chart.js", "dist", "text/javascript"),
}


@bp.get("/")
def shop():
    """The customer page: catalog, cart, orders and their live timelines."""
    return render_template("shop.html")


@bp.get("/operator")
def operator_dashboard():
    """The operator page: charts, order search, live feed, counts, stuck sagas, stock alerts."""
    return render_template("operator.html", flower_url=get_settings().flower_url, statuses=STATUSES)


@bp.get("/vendor/<name>")
def vendor(name: str):
    """A browser library from node_modules (404 for a name not in ``VENDOR``, 503
    until ``npm ci`` has run)."""
    if name not in VENDOR:
        return problem(404, "no such vendored file")
    package, directory, mimetype = VENDOR[name]
    folder = NODE_MODULES / package / directory
    if not (folder / name).exists():
        return problem(
            503,
            f"the {package} package is not installed; run ./run.sh "
            "(it runs npm ci) or npm ci in the repository",
        )
    return send_from_directory(folder, name, mimetype=mimetype)
