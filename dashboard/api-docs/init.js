// Renders plume's own OpenAPI document with the vendored Swagger UI (no other origin is reached:
// the validator badge, which would call one, is off). "Try it out" calls this server with the
// browser's session cookie, or with a token given under "Authorize".
/* global SwaggerUIBundle */
window.addEventListener('DOMContentLoaded', () => {
  SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#reference',
    deepLinking: true,
    validatorUrl: null,
    withCredentials: true,
  });
});
