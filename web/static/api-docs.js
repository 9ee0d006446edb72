// /api/v1/docs: Swagger UI (npm swagger-ui-dist, served from /vendor) rendering
// the served OpenAPI document. A file rather than inline script: the page's CSP
// allows scripts from this origin only.
"use strict";

(() => {
  const root = document.getElementById("swagger-ui");
  window.orionApiDocs = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,  // no badge fetched from the public validator: nothing leaves this origin
    // "Authorize" takes an access token (POST /auth/login) for "Try it out".
    persistAuthorization: false,
  });
})();
