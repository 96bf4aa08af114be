//! Configurations for the real servers tests and benchmarks run.

use std::path::Path;

/// An nginx configuration for one foreground process (`master_process off`:
/// forked workers are not what these runs measure) serving the files of
/// `root` on `port`, keeping its pid and temporary files in `dir` and
/// logging errors to stderr.
pub fn nginx_conf(dir: &Path, root: &Path, port: u16) -> String {
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log stderr warn;\n\
         pid {d}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; sendfile on; tcp_nodelay on; keepalive_requests 100000;\n\
           client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;\n\
           uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
           server {{ listen {port}; root {r}; }} }}\n",
        d = dir.display(),
        r = root.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_conf_names_the_port_root_and_directory() {
        let c = nginx_conf(Path::new("/tmp/x"), Path::new("/tmp/x/www"), 18080);
        assert!(c.contains("listen 18080;"), "{c}");
        assert!(c.contains("root /tmp/x/www;"), "{c}");
        assert!(c.contains("pid /tmp/x/nginx.pid;"), "{c}");
        assert!(c.contains("master_process off;"), "{c}");
    }
}
