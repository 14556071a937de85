// Where the demo finds its Bayeux endpoint: `?endpoint=` names this
// server's Bayeux path (`/x/bayeux`) or a URL of this same origin. Another
// server is refused: a link to the demo could otherwise point it at a
// server of the link's author, which would read what the user types (and
// the user would see this site's address). Pure, so node can test it.

/** The Bayeux endpoint for `given` (the `?endpoint=` value, or null) on a
 * page at `page` (its URL): a same-origin path, or `/cometd`. */
export function sameOriginEndpoint(given, page) {
  if (!given) return "/cometd";
  try {
    const base = new URL(page);
    const url = new URL(given, base);
    if (url.origin === base.origin && (url.protocol === "http:" || url.protocol === "https:")) {
      return url.pathname + url.search;
    }
  } catch (_) {
    // Not a URL: refused below.
  }
  console.warn(`ignoring ?endpoint=${given}: only a path of this server is accepted`);
  return "/cometd";
}
