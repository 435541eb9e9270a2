//! The client against a bare TCP listener that answers one request with fixed bytes: to see
//! the request itself, and answers the mock does not give.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

/// Accepts one connection, answers it with `response` and returns the request head.
async fn one_shot_server(response: Vec<u8>) -> (Url, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = Url::parse(&format!(
        "http://{}",
        listener.local_addr().expect("has an address")
    ))
    .expect("valid URL");
    let head = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("a connection");
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = socket.read(&mut buffer).await.expect("reads");
            if read == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..read]);
        }
        let _ = socket.write_all(&response).await;
        let _ = socket.shutdown().await;
        String::from_utf8_lossy(&head).into_owned()
    });
    (url, head)
}

#[tokio::test]
async fn a_body_without_a_length_is_capped_while_it_is_read() {
    let mut response =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".to_vec();
    response.extend_from_slice(br#"{"status":"ok","totalResults":1,"articles":[{"title":""#);
    response.extend(std::iter::repeat_n(b'x', 100_000));
    let (url, _head) = one_shot_server(response).await;
    let settings = FetchSettings {
        max_response_bytes: 16 * 1024,
        ..settings()
    };
    let client = NewsClient::new(&url, Some(Secret::new(KEY)), settings).expect("client");

    let error = error_of(client.fetch_page(&query(), 1, 5, admit_all).await);

    assert_eq!(error, FetchError::TooLarge { limit: 16 * 1024 });
}

#[tokio::test]
async fn the_key_travels_only_in_the_x_api_key_header() {
    let body = br#"{"status":"ok","totalResults":0,"articles":[]}"#;
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    let (url, head) = one_shot_server(response).await;
    let client = NewsClient::new(&url, Some(Secret::new(KEY)), settings()).expect("client");

    page_of(client.fetch_page(&query(), 3, 7, admit_all).await);
    assert!(!format!("{client:?}").contains(KEY));

    let head = head.await.expect("request captured");
    let request_line = head.lines().next().expect("a request line");
    assert!(
        request_line.starts_with("GET /v2/everything?"),
        "{request_line}"
    );
    for param in ["q=bitcoin", "language=en", "pageSize=7", "page=3"] {
        assert!(request_line.contains(param), "{param} in {request_line}");
    }
    assert!(!request_line.contains(KEY), "{request_line}");
    let key_headers: Vec<&str> = head.lines().filter(|line| line.contains(KEY)).collect();
    assert_eq!(key_headers, [format!("x-api-key: {KEY}")]);
}

#[tokio::test]
async fn a_key_echoed_by_the_server_is_scrubbed_from_the_error() {
    let body = format!(r#"{{"status":"error","code":"parameterInvalid","message":"bad {KEY}"}}"#);
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (url, _head) = one_shot_server(response.into_bytes()).await;
    let client = NewsClient::new(&url, Some(Secret::new(KEY)), settings()).expect("client");

    let error = error_of(client.fetch_page(&query(), 1, 5, admit_all).await);

    assert!(error.to_string().contains("bad ***"), "{error}");
}
