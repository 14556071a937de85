//! The admin page: one HTML page, its script and its style, embedded in the
//! binary (no CDN, nothing fetched but `/api/stats`, which the script polls
//! once a second to fill the tables and draw the charts in SVG).

/// The admin page's files by path: their content type and text.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some((
            "text/html; charset=utf-8",
            include_str!("assets/index.html"),
        )),
        "/admin.js" => Some((
            "text/javascript; charset=utf-8",
            include_str!("assets/admin.js"),
        )),
        "/admin.css" => Some(("text/css; charset=utf-8", include_str!("assets/admin.css"))),
        _ => None,
    }
}
