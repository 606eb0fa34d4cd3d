// Starts Swagger UI on /docs. A file of its own, not an inline <script>, so that the page's
// Content-Security-Policy can keep script-src 'self' (no 'unsafe-inline', no hashes).
"use strict";

(function () {
  const root = document.getElementById("swagger-ui");
  if (typeof SwaggerUIBundle !== "function") {
    root.textContent = "Swagger UI did not load; the OpenAPI document is at " + root.dataset.openapiUrl;
    return;
  }
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // The online validator badge would load an image from validator.swagger.io (off-site).
    validatorUrl: null,
  });
})();
