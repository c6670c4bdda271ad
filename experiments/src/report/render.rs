//! The report's blocks as markdown and as HTML.

use std::fmt::Write as _;

use crate::report::blocks::Block;

fn md_escape_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Inline `code` spans become <code> in HTML.
fn html_inline(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in html_escape(s).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

pub fn markdown(title: &str, blocks: &[Block]) -> String {
    let mut s = format!("# {title}\n\n");
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                let _ = writeln!(s, "{} {text}\n", "#".repeat(*level as usize));
            }
            Block::Para(text) => {
                let _ = writeln!(s, "{text}\n");
            }
            Block::Table { header, rows } => {
                let _ = writeln!(
                    s,
                    "| {} |",
                    header
                        .iter()
                        .map(|h| md_escape_cell(h))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
                let _ = writeln!(s, "|{}", "---|".repeat(header.len()));
                for r in rows {
                    let _ = writeln!(
                        s,
                        "| {} |",
                        r.iter()
                            .map(|c| md_escape_cell(c))
                            .collect::<Vec<_>>()
                            .join(" | ")
                    );
                }
                s.push('\n');
            }
            Block::Figure { stem, caption } => {
                let _ = writeln!(
                    s,
                    "![{caption}](figures/{stem}.png)\n\n*{caption}* ([SVG](figures/{stem}.svg))\n"
                );
            }
            Block::Image { path, caption } => {
                let _ = writeln!(s, "![{caption}]({path})\n\n*{caption}*\n");
            }
            Block::Files(files) => {
                let links: Vec<String> = files.iter().map(|f| format!("[{f}]({f})")).collect();
                let _ = writeln!(s, "Files: {}\n", links.join(", "));
            }
        }
    }
    s
}

pub fn html(title: &str, blocks: &[Block]) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}figure{{margin:1.5em 0}}\
         figcaption{{font-style:italic;color:#444}}code{{background:#f3f3f3;padding:0 3px}}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        html_escape(title),
        html_escape(title)
    );
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                let _ = writeln!(s, "<h{level}>{}</h{level}>", html_inline(text));
            }
            Block::Para(text) => {
                let _ = writeln!(s, "<p>{}</p>", html_inline(text));
            }
            Block::Table { header, rows } => {
                s.push_str("<table>\n<tr>");
                for h in header {
                    let _ = write!(s, "<th>{}</th>", html_inline(h));
                }
                s.push_str("</tr>\n");
                for r in rows {
                    s.push_str("<tr>");
                    for c in r {
                        let _ = write!(s, "<td>{}</td>", html_inline(c));
                    }
                    s.push_str("</tr>\n");
                }
                s.push_str("</table>\n");
            }
            Block::Figure { stem, caption } => {
                let _ = writeln!(
                    s,
                    "<figure><a href=\"figures/{stem}.svg\"><img src=\"figures/{stem}.png\" alt=\"{}\"></a><figcaption>{}</figcaption></figure>",
                    html_escape(caption),
                    html_inline(caption)
                );
            }
            Block::Image { path, caption } => {
                let _ = writeln!(
                    s,
                    "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
                    html_escape(path),
                    html_escape(caption),
                    html_inline(caption)
                );
            }
            Block::Files(files) => {
                let links: Vec<String> = files
                    .iter()
                    .map(|f| format!("<a href=\"{0}\">{0}</a>", html_escape(f)))
                    .collect();
                let _ = writeln!(s, "<p>Files: {}</p>", links.join(", "));
            }
        }
    }
    s.push_str("</body>\n</html>\n");
    s
}
